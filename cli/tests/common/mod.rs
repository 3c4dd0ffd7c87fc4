//! What the CLI's end-to-end tests share: the binary, a child process
//! killed however the test ends, and a port free for UDP and TCP.
#![allow(dead_code)]

use std::process::{Child, Command};

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
