//! What the CLI's end-to-end tests share: the binary, a child process
//! killed however the test ends, and a port free for UDP and TCP.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub fn vantage() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vantage"))
}

/// A process killed when the test ends, however it ends.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port free for both UDP and TCP on 127.0.0.1 (QUIC and HTTPS share it).
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP");
}

/// Starts a process and reads its stdout until `until` has seen what it
/// needs; the rest of its stdout is thrown away.
pub fn start(command: &mut Command, mut until: impl FnMut(&[&str]) -> bool) -> Running {
    // Errors only: what made a process end before it was ready.
    let mut child = command
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let line = lines
            .next()
            .expect("process ended before it was ready")
            .unwrap();
        let words: Vec<&str> = line.split_whitespace().collect();
        if until(&words) {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Running(child)
}
