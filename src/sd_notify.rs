//! systemd's notify protocol (sd_notify(3)) without libsystemd: `READY=1` once the services
//! run, `WATCHDOG=1` at half the unit's `WatchdogSec` while the runtime is alive, `STOPPING=1`
//! on shutdown. Does nothing when `NOTIFY_SOCKET` is unset (not under systemd).

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

fn socket_addr() -> Option<std::os::unix::net::SocketAddr> {
    let path = std::env::var_os("NOTIFY_SOCKET")?;
    let path = path.to_str()?;
    if let Some(name) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).ok()
    } else {
        std::os::unix::net::SocketAddr::from_pathname(path).ok()
    }
}

/// Send one notification; errors are ignored (the manager may be gone at shutdown).
pub fn notify(state: &str) {
    let Some(addr) = socket_addr() else { return };
    if let Ok(sock) = UnixDatagram::unbound() {
        let _ = sock.send_to_addr(state.as_bytes(), &addr);
    }
}

/// The watchdog interval systemd asked for (`WATCHDOG_USEC`, for this process).
fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Tell systemd the node is ready, and keep its watchdog fed for as long as the runtime lives
/// (also while a shutdown drains the work in flight). The pings come from a task on the
/// runtime: a wedged runtime stops them and systemd restarts the node.
pub fn ready() {
    notify("READY=1");
    let Some(every) = watchdog_interval() else {
        return;
    };
    tokio::spawn(async move {
        loop {
            notify("WATCHDOG=1");
            tokio::time::sleep(every / 2).await;
        }
    });
}
