//! The Vantage lab: emulated network paths on loopback, so the whole
//! pipeline runs on one machine and the probe can be checked against what
//! the path injected.
//!
//! [`path`] is the path model (delay, jitter, loss, bandwidth, MTU) as
//! plain code; [`UdpRelay`] and [`TcpRelay`] carry real traffic through it,
//! releasing packets from dedicated threads that sleep and then spin, so
//! they are on time to well under a millisecond ([`TimingStats`]).
#![warn(missing_docs, unreachable_pub)]

mod delay_line;
pub mod demo;
pub mod emulator;
mod fabric;
mod link;
pub mod netns;
pub mod path;
mod run;
pub mod scenario;
mod tcp_relay;
pub mod topology;
pub mod tun;
mod udp_relay;

pub use delay_line::{ReleaseClock, TimingStats};
pub use demo::{run_demo, DemoError, DemoEvent, DemoOptions, DemoOutcome, DEMO_CLAIMS};
pub use fabric::{Emulation, Mode};
pub use link::{EmulatedPath, PathSpec, Upstream};
pub use run::{run_lab, start_lab, LabError, LabOptions, LabSummary, RunningLab};
pub use scenario::{Phase, Scenario, ScenarioError};
pub use tcp_relay::TcpRelay;
pub use udp_relay::UdpRelay;
