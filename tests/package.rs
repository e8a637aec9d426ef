//! The arm64 Debian package (scripts/package-deb) of the aarch64 release binary that
//! scripts/test builds: control fields, conffile, file modes, and the packaged binary, unit and
//! config working together once extracted (binary under qemu, unit under systemd-analyze).

mod support;

use std::process::Command;

use support::*;

#[test]
fn arm64_deb_holds_a_working_node() {
    let Some(bin) = aarch64_bin() else {
        return;
    };
    // scripts/package-deb finds the binary under CARGO_TARGET_DIR/<triple>/release.
    let target_dir = std::path::Path::new(&bin)
        .ancestors()
        .nth(3)
        .expect("target dir")
        .to_path_buf();
    let out_dir = tempfile::tempdir().unwrap();
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/package-deb"))
        .arg("arm64")
        .arg(out_dir.path())
        .env("CARGO_TARGET_DIR", &target_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let deb = stdout(&out).trim().to_string();
    assert!(deb.ends_with(&format!("bigbrotr_{}_arm64.deb", env!("CARGO_PKG_VERSION"))));

    let info = Command::new("dpkg-deb")
        .args(["--field", &deb])
        .output()
        .unwrap();
    let info = stdout(&info);
    for want in [
        "Package: bigbrotr",
        "Architecture: arm64",
        &format!("Version: {}", env!("CARGO_PKG_VERSION")),
        "Depends: libc6 (>= 2.34)",
    ] {
        assert!(info.contains(want), "{want} missing in:\n{info}");
    }
    // The config is not a conffile (first-boot provisioning appends to it; upgrades must not
    // prompt): postinst creates it from the template.
    let ctrl = Command::new("sh")
        .arg("-c")
        .arg(format!("dpkg-deb --ctrl-tarfile '{deb}' | tar -tf -"))
        .output()
        .unwrap();
    assert!(!stdout(&ctrl).contains("conffiles"), "{}", stdout(&ctrl));
    let postinst = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "dpkg-deb --ctrl-tarfile '{deb}' | tar -xOf - ./postinst"
        ))
        .output()
        .unwrap();
    assert!(stdout(&postinst).contains("usr/share/bigbrotr/config.toml"));
    let contents = stdout(
        &Command::new("dpkg-deb")
            .args(["--contents", &deb])
            .output()
            .unwrap(),
    );
    assert!(
        contents
            .lines()
            .any(|l| l.starts_with("-rwxr-xr-x root/root") && l.ends_with("./usr/bin/bigbrotr")),
        "{contents}"
    );
    assert!(
        contents.contains("./lib/systemd/system/bigbrotr.service"),
        "{contents}"
    );

    // Extracted: the packaged unit verifies against the packaged binary path, and the packaged
    // binary runs the packaged config (data dir moved into the test's temp dir).
    let root = tempfile::tempdir().unwrap();
    let x = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(root.path())
        .status()
        .unwrap();
    assert!(x.success());
    let packaged_bin = root.path().join("usr/bin/bigbrotr");
    let unit = std::fs::read_to_string(root.path().join("lib/systemd/system/bigbrotr.service"))
        .unwrap()
        .replace("/usr/bin/bigbrotr", "/bin/true");
    let unit_path = root.path().join("bigbrotr.service");
    std::fs::write(&unit_path, unit).unwrap();
    let v = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit_path)
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", stderr(&v));
    let cfg = std::fs::read_to_string(root.path().join("usr/share/bigbrotr/config.toml"))
        .unwrap()
        .replace(
            "/var/lib/bigbrotr",
            &root.path().join("state").display().to_string(),
        );
    let cfg_path = root.path().join("config.toml");
    std::fs::write(&cfg_path, cfg + "[seeder]\nenabled = false\n").unwrap();
    let run = |args: &[&str]| {
        Command::new("qemu-aarch64-static")
            .args(["-L", "/usr/aarch64-linux-gnu"])
            .arg(&packaged_bin)
            .arg("--config")
            .arg(&cfg_path)
            .args(args)
            .env_remove("BIGBROTR_CONFIG")
            .output()
            .unwrap()
    };
    let init = run(&["init"]);
    assert!(init.status.success(), "{}", stderr(&init));
    assert!(root.path().join("state/node.key").exists());
    let st = run(&["status", "--json"]);
    assert!(st.status.success(), "{}", stderr(&st));
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(v["events_stored"], 0, "{v}");
}
