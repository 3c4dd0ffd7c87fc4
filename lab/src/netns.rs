//! Network namespaces the lab makes for itself: creating them, running a
//! tokio runtime inside one, and removing them again, including those a
//! killed run left behind.
//!
//! A namespace is made with iproute2 (`ip netns add`), so it is visible
//! to `ip netns list` while the lab runs and can be inspected by hand.
//! Every name starts with [`PREFIX`] and the lab's process id: a later
//! run removes the namespaces of any such process that is gone.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// The start of every namespace name the lab makes.
pub const PREFIX: &str = "vantage-lab-";

/// Where iproute2 keeps named namespaces.
const NETNS_DIR: &str = "/run/netns";

/// Why a namespace could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The process lacks the rights (root, or CAP_NET_ADMIN and
    /// CAP_SYS_ADMIN), or the machine lacks `/dev/net/tun` or iproute2.
    #[error("namespace mode is not available: {0}")]
    Unavailable(String),
    /// An `ip` command failed.
    #[error("`ip {args}` failed: {reason}")]
    Ip {
        /// Its arguments.
        args: String,
        /// What it printed, or why it did not run.
        reason: String,
    },
    /// A system call failed.
    #[error("{what}: {source}")]
    Sys {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Whether this process can make namespaces and TUN devices; the reason
/// when it cannot, in words a user can act on.
pub fn available() -> Result<(), NetnsError> {
    let caps = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0);
    const NET_ADMIN: u64 = 1 << 12;
    const SYS_ADMIN: u64 = 1 << 21;
    if caps & (NET_ADMIN | SYS_ADMIN) != NET_ADMIN | SYS_ADMIN {
        return Err(NetnsError::Unavailable(
            "it needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) to make network namespaces; \
             run as root, or use --emulation relay"
                .into(),
        ));
    }
    if !Path::new("/dev/net/tun").exists() {
        return Err(NetnsError::Unavailable(
            "/dev/net/tun is missing (load the tun module: modprobe tun)".into(),
        ));
    }
    match Command::new("ip").arg("-V").output() {
        Ok(o) if o.status.success() => Ok(()),
        _ => Err(NetnsError::Unavailable(
            "the `ip` command (iproute2) is missing: install iproute2".into(),
        )),
    }
}

/// Runs `ip ARGS`, with its message as the error.
pub(crate) fn ip(args: &[&str]) -> Result<(), NetnsError> {
    let failed = |reason: String| NetnsError::Ip {
        args: args.join(" "),
        reason,
    };
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| failed(e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(failed(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// A network namespace this process made. Dropping it removes it (and
/// with it every interface and route inside).
#[derive(Debug)]
pub struct Netns {
    name: String,
    file: File,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Netns {
    /// Makes a namespace named after this process and `role` (letters,
    /// digits and `-` are kept; anything else becomes `-`), with its
    /// loopback up.
    pub fn create(role: &str) -> Result<Self, NetnsError> {
        let role: String = role
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .take(40)
            .collect();
        let name = format!(
            "{PREFIX}{}-{}-{role}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name])?;
        let opened =
            File::open(Path::new(NETNS_DIR).join(&name)).map_err(|source| NetnsError::Sys {
                what: format!("open {NETNS_DIR}/{name}"),
                source,
            });
        let file = match opened {
            Ok(f) => f,
            Err(e) => {
                let _ = ip(&["netns", "del", &name]);
                return Err(e);
            }
        };
        let ns = Netns { name, file };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Its name, as `ip netns list` shows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) -> Result<(), NetnsError> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Moves the calling thread into this namespace. Sockets and TUN
    /// devices the thread makes afterwards belong to it; threads it
    /// spawns start in it.
    pub fn enter(&self) -> Result<(), NetnsError> {
        enter(&self.file, &self.name)
    }

    /// Runs `f` on a new thread inside the namespace and returns what it
    /// returns: a socket made there stays in the namespace wherever it is
    /// used afterwards.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
        std::thread::scope(|s| {
            s.spawn(|| {
                self.enter()?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|_| {
                Err(NetnsError::Unavailable(format!(
                    "a thread in namespace {} panicked",
                    self.name
                )))
            })
        })
    }

    /// A tokio runtime whose threads all live in this namespace.
    pub fn runtime(&self) -> Result<NsRuntime, NetnsError> {
        NsRuntime::start(self)
    }
}

fn enter(file: &File, name: &str) -> Result<(), NetnsError> {
    // SAFETY: setns on a valid, open namespace file descriptor; it affects
    // only the calling thread.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(NetnsError::Sys {
            what: format!("enter namespace {name}"),
            source: std::io::Error::last_os_error(),
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            tracing::warn!(error = %e, "a lab namespace was not removed");
        }
    }
}

/// Removes the namespaces of lab runs whose process is gone (killed, so
/// they could not clean up), and returns their names.
pub fn remove_stale() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if let Some(pid) = owner_of(&name) {
            if !Path::new(&format!("/proc/{pid}")).exists() && ip(&["netns", "del", &name]).is_ok()
            {
                removed.push(name);
            }
        }
    }
    removed
}

/// The process id in a lab namespace's name.
fn owner_of(name: &str) -> Option<u32> {
    name.strip_prefix(PREFIX)?.split('-').next()?.parse().ok()
}

/// A current-thread tokio runtime on its own thread inside a namespace:
/// everything spawned on it opens its sockets there. Dropping it stops the
/// runtime, cancelling what still runs on it.
pub struct NsRuntime {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NsRuntime {
    fn start(ns: &Netns) -> Result<Self, NetnsError> {
        let sys = |what: &str, source| NetnsError::Sys {
            what: format!("{what} in namespace {}", ns.name),
            source,
        };
        let file = ns.file.try_clone().map_err(|e| sys("share", e))?;
        let name = ns.name.clone();
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("lab-netns".into())
            .spawn(move || {
                let built = enter(&file, &name).and_then(|()| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|source| NetnsError::Sys {
                            what: format!("start a runtime in namespace {name}"),
                            source,
                        })
                });
                match built {
                    Ok(rt) => {
                        let _ = handle_tx.send(Ok(rt.handle().clone()));
                        let _ = rt.block_on(stop_rx);
                        // A blocking task still running (a responder's
                        // STAMP loop not shut down) must not hold the lab.
                        rt.shutdown_timeout(std::time::Duration::from_secs(2));
                    }
                    Err(e) => {
                        let _ = handle_tx.send(Err(e));
                    }
                }
            })
            .map_err(|e| sys("spawn a thread", e))?;
        let handle = handle_rx
            .recv()
            .map_err(|_| NetnsError::Unavailable("a namespace runtime thread ended".into()))??;
        Ok(NsRuntime {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Spawns `future` inside the namespace.
    pub fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(future)
    }
}

impl Drop for NsRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lab_namespace_name_gives_its_owner() {
        assert_eq!(owner_of("vantage-lab-4242-3-p-IN-wifi"), Some(4242));
        assert_eq!(owner_of("vantage-lab-x-3"), None);
        assert_eq!(owner_of("other-4242"), None);
    }

    #[test]
    #[ignore = "needs root"]
    fn a_namespace_is_entered_and_removed_and_a_stale_one_is_cleaned() {
        let ns = Netns::create("unit").unwrap();
        let name = ns.name().to_string();
        assert!(Path::new(NETNS_DIR).join(&name).exists());
        // A socket made inside sees only the namespace's own loopback:
        // binding an address of the host's other interfaces fails there.
        let inside = ns
            .run(|| std::net::UdpSocket::bind("127.0.0.1:0").map(|s| s.local_addr()))
            .unwrap();
        assert!(inside.is_ok());
        drop(ns);
        assert!(!Path::new(NETNS_DIR).join(&name).exists());

        // A namespace of a process that is gone (pid beyond pid_max).
        let stale = format!("{PREFIX}4194305-0-stale");
        ip(&["netns", "add", &stale]).unwrap();
        let removed = remove_stale();
        assert!(removed.contains(&stale), "{removed:?}");
        assert!(!Path::new(NETNS_DIR).join(&stale).exists());
    }
}
