//! The aarch64 release binary (the Raspberry Pi build; scripts/test builds it and sets
//! BIGBROTR_AARCH64_BIN) under qemu-user: `--version`, and a short sync from a local relay whose
//! result the native binary then reads back from the same data dir.

mod support;

use std::process::Command;

use support::*;

fn qemu(bin: &std::ffi::OsStr) -> Command {
    let mut c = Command::new("qemu-aarch64-static");
    c.args(["-L", "/usr/aarch64-linux-gnu"]).arg(bin);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aarch64_binary_runs_and_syncs_under_qemu() {
    let Some(bin) = aarch64_bin() else {
        return;
    };
    // Really an aarch64 ELF (e_machine 183), not the host binary.
    let head = std::fs::read(&bin).expect("aarch64 binary");
    assert_eq!(&head[..4], b"\x7fELF");
    assert_eq!(u16::from_le_bytes([head[18], head[19]]), 183, "EM_AARCH64");

    let out = qemu(&bin)
        .arg("--version")
        .output()
        .expect("qemu-aarch64-static");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(env!("CARGO_PKG_VERSION")),
        "{}",
        stdout(&out)
    );

    let events = notes(200, &keys(3), |i| 1_700_000_000 + i as u64 * 3);
    let relay = local_relay(&events, RelayOpts::default()).await;
    let node = Node::new("");
    let (b, cfg, url) = (bin.clone(), node.config.clone(), relay.url.clone());
    let out = tokio::task::spawn_blocking(move || {
        qemu(&b)
            .arg("--config")
            .arg(&cfg)
            .args(["sync", "--relay", &url, "--once"])
            .env_remove("BIGBROTR_CONFIG")
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "aarch64 sync: {}", stderr(&out));
    // The stores it wrote are the same format on every architecture.
    assert_same_ids(&node.exported_ids(), &ids_of(&events));
}
