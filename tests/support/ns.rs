//! Linux namespaces for tests that must prove what a process does NOT do (resolve a name,
//! reach an address): a mount namespace with its own /etc/hosts and /etc/resolv.conf, and a
//! counting "resolver" on 127.0.0.9:53. Needs root, as CI has.

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// `program args` in a new mount namespace where `binds` (file, target) are bind-mounted.
pub fn in_namespace(binds: &[(&Path, &str)], program: &str, args: &[&str]) -> Command {
    let mut script = String::new();
    for (file, target) in binds {
        script.push_str(&format!("mount --bind '{}' {target} && ", file.display()));
    }
    script.push_str("exec \"$0\" \"$@\"");
    let mut c = Command::new("unshare");
    c.args(["-m", "sh", "-c", &script, program]).args(args);
    c
}

/// A UDP "resolver" on 127.0.0.9:53 that counts every datagram it receives.
pub fn dns_counter() -> Arc<AtomicU64> {
    let sock = UdpSocket::bind("127.0.0.9:53").expect("bind 127.0.0.9:53 (needs root)");
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while sock.recv_from(&mut buf).is_ok() {
            c.fetch_add(1, Ordering::SeqCst);
        }
    });
    count
}

/// An /etc/hosts that knows only localhost and an /etc/resolv.conf whose one nameserver is
/// [`dns_counter`], written in `dir`: bind them over the real ones with [`in_namespace`].
pub fn counted_resolver_files(dir: &Path) -> (PathBuf, PathBuf) {
    let hosts = dir.join("node-hosts");
    std::fs::write(&hosts, "127.0.0.1 localhost\n").expect("hosts");
    let resolv = dir.join("node-resolv.conf");
    std::fs::write(
        &resolv,
        "nameserver 127.0.0.9\noptions timeout:1 attempts:1\n",
    )
    .expect("resolv.conf");
    (hosts, resolv)
}

/// Move this thread (and every thread and process it starts from now on) into a new network
/// namespace with only the loopback interface, up.
pub fn enter_loopback_only_netns() {
    // SAFETY: unshare(2) on the calling thread; no memory is shared with the kernel.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "unshare(CLONE_NEWNET) failed ({}): this test needs root (CAP_SYS_ADMIN), as CI has",
        std::io::Error::last_os_error()
    );
    let up = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .expect("ip (iproute2; scripts/bootstrap installs it)");
    assert!(up.success(), "ip link set lo up");
    // Proof that nothing else is reachable from here.
    let out = std::net::TcpStream::connect_timeout(
        &"192.0.2.1:9".parse().unwrap(), // TEST-NET-1: never routed, and no route here at all
        Duration::from_millis(200),
    );
    let err = out.expect_err("no route outside loopback");
    assert_eq!(
        err.raw_os_error(),
        Some(libc::ENETUNREACH),
        "expected 'network unreachable', got {err}"
    );
}

pub fn in_netns(body: impl std::future::Future<Output = ()>) {
    enter_loopback_only_netns();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(body);
}

/// A spawned `run` that is killed if the test fails before stopping it.
pub struct KillOnDrop(pub Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
