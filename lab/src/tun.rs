//! TUN devices: a namespace's one interface, whose every IP packet the
//! lab reads and writes as bytes (`IFF_TUN | IFF_NO_PI`: plain IP, no
//! header of its own, as Mahimahi's shells do).

use crate::netns::{Netns, NetnsError};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

/// A TUN device inside a namespace, held open by the lab. Closing it (on
/// drop) removes the device.
#[derive(Debug)]
pub struct TunPort {
    file: File,
    name: String,
}

/// `struct ifreq` as TUNSETIFF reads it: the name, then the flags.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

impl TunPort {
    /// Makes the TUN device `name` inside `ns` (opened from a thread in
    /// the namespace, so the device is born there).
    pub fn create(ns: &Netns, name: &str) -> Result<Self, NetnsError> {
        let sys = |what: String, source| NetnsError::Sys { what, source };
        if name.len() >= libc::IFNAMSIZ {
            return Err(sys(
                format!("TUN name {name}"),
                io::Error::other("longer than 15 bytes"),
            ));
        }
        let file = ns
            .run(|| -> io::Result<File> {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open("/dev/net/tun")?;
                let mut req = IfReq {
                    name: [0; libc::IFNAMSIZ],
                    flags: (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short,
                    _pad: [0; 22],
                };
                req.name[..name.len()].copy_from_slice(name.as_bytes());
                // SAFETY: TUNSETIFF reads a struct ifreq, which IfReq lays
                // out (name, flags, padding to its full size).
                let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
                if rc != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(file)
            })?
            .map_err(|e| sys(format!("make TUN device {name} in {}", ns.name()), e))?;
        Ok(TunPort {
            file,
            name: name.to_string(),
        })
    }

    /// The device's name inside its namespace.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads one packet into `buf`, waiting at most `wait`: `Ok(None)`
    /// when none came.
    pub fn read(&self, buf: &mut [u8], wait: Duration) -> io::Result<Option<usize>> {
        let mut pfd = libc::pollfd {
            fd: self.file.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = wait.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut pfd, 1, ms) };
        if ready < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(None)
            } else {
                Err(e)
            };
        }
        if ready == 0 {
            return Ok(None);
        }
        // SAFETY: reading into a valid buffer of its own length.
        let n = unsafe { libc::read(self.file.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock => Ok(None),
                _ => Err(e),
            };
        }
        Ok(Some(n as usize))
    }

    /// Hands one packet to the namespace, as if it had arrived on the wire.
    pub fn write(&self, packet: &[u8]) -> io::Result<()> {
        // SAFETY: writing from a valid buffer of its own length.
        let n = unsafe { libc::write(self.file.as_raw_fd(), packet.as_ptr().cast(), packet.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}
