//! The v1 backend over a real LocalSandboxd (its v1 management routes and per-sandbox endpoint sockets) and a
//! real engine: create → exec, spawn (stdin, tty, kill), files, lifecycle. Marked `ignore`: they need
//! `DOCKER_HOST` and `SANDBOXD_TEST_IMAGE` (scripts/lib.sh; scripts/test.sh runs them) and LocalSandboxd's v1
//! surface (`src/core/local/v1`, `src/core/local/endpoint`: helpers A and B of issue #21; on this branch alone,
//! before they are merged, the test fails at the create).

use super::backend::V1Backend;
use super::V1Options;
use crate::core::backend::{SandboxBackend, SandboxSpec};
use crate::core::call::Call;
use crate::core::error::ErrorCode;
use crate::core::exec::ExecSpec;
use crate::core::local::{BackendKind, LocalOptions, LocalSandboxd};
use bytes::Bytes;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn env(k: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| {
        panic!("{k} is not set: run under scripts/lib.sh (see this file's doc)")
    })
}

fn call(secs: u64) -> Call {
    Call::new(Some(Duration::from_secs(secs)), CancellationToken::new())
}

fn cmd(args: &[&str]) -> ExecSpec {
    ExecSpec {
        cmd: args.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

#[tokio::test]
#[ignore = "needs DOCKER_HOST and SANDBOXD_TEST_IMAGE (scripts/lib.sh); scripts/test.sh runs it"]
async fn the_v1_backend_over_local_sandboxd() {
    let d = LocalSandboxd::start(LocalOptions {
        backend: Some(BackendKind::Relay),
        docker_host: Some(env("DOCKER_HOST")),
        ..Default::default()
    })
    .await
    .unwrap();
    let b = V1Backend::new(&V1Options {
        endpoint: Some(format!("unix://{}", d.socket_path().display())),
        ..Default::default()
    })
    .unwrap();
    let spec = SandboxSpec {
        name: Some("v1-client".into()),
        agent: "shell".into(),
        workspace: "/work/proj".into(),
        template: Some(env("SANDBOXD_TEST_IMAGE")),
        environment: [("GREETING".to_string(), "hello v1".to_string())].into(),
        ..Default::default()
    };
    let s = b.create(&spec, &call(120)).await.unwrap();
    assert_eq!(
        (s.name.as_str(), s.status.as_str()),
        ("v1-client", "running")
    );
    assert_eq!(s.workspace, "/work/proj");
    assert_eq!(b.ensure(&spec, &call(30)).await.unwrap().id, s.id);
    let t = b.target("v1-client", &call(30)).await.unwrap();

    // one-shot exec, env, cwd in the workspace
    let mut x = cmd(&["sh", "-c", "echo $GREETING; pwd; echo err >&2; exit 3"]);
    x.cwd = Some("/work/proj".into());
    let out = t.exec(x, CancellationToken::new()).await.unwrap();
    assert_eq!(out.exit_code, Some(3), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello v1\n/work/proj\n"
    );
    assert_eq!(out.stderr, b"err\n");

    // buffered exec with stdin and a timeout (a durable process)
    let mut x = cmd(&["cat"]);
    x.stdin = Some(Bytes::from_static(b"piped\n"));
    x.timeout = Some(Duration::from_secs(20));
    let out = t.exec(x, CancellationToken::new()).await.unwrap();
    assert_eq!(
        (out.exit_code, out.stdout.as_slice()),
        (Some(0), &b"piped\n"[..])
    );
    let mut x = cmd(&["sleep", "30"]);
    x.timeout = Some(Duration::from_millis(500));
    let out = t.exec(x, CancellationToken::new()).await.unwrap();
    assert!(out.timed_out, "{out:?}");

    // files
    t.write_file("/work/proj/a.txt", b"\x00bytes\xff", Some(0o600), &call(10))
        .await
        .unwrap();
    assert_eq!(
        t.read_file("/work/proj/a.txt", &call(10)).await.unwrap(),
        b"\x00bytes\xff"
    );
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    tar.append_data(&mut h, "sub/", &[][..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(2);
    tar.append_data(&mut h, "sub/b.txt", &b"bb"[..]).unwrap();
    t.write_files(
        "/work/proj",
        Bytes::from(tar.into_inner().unwrap()),
        &call(10),
    )
    .await
    .unwrap();
    assert_eq!(
        t.read_file("/work/proj/sub/b.txt", &call(10))
            .await
            .unwrap(),
        b"bb"
    );
    let e = t.read_file("/work/proj/none", &call(10)).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::PathNotFound, "{e:?}");

    // spawn: interactive stdin, ordered output, exit
    let mut x = cmd(&[
        "sh",
        "-c",
        "while read l; do echo got:$l; done; echo bye >&2",
    ]);
    x.interactive = true;
    let p = t.spawn(x, CancellationToken::new()).await.unwrap();
    p.write(b"one\ntwo\n").await.unwrap();
    p.end().await.unwrap();
    let (mut so, mut se) = (Vec::new(), Vec::new());
    while let Some(c) = p.next().await {
        let (err, d) = c.unwrap().into_parts();
        if err {
            se.extend_from_slice(&d)
        } else {
            so.extend_from_slice(&d)
        }
    }
    assert_eq!(String::from_utf8_lossy(&so), "got:one\ngot:two\n");
    assert_eq!(se, b"bye\n");
    assert_eq!(p.wait(&call(10)).await.unwrap().exit_code, Some(0));

    // a tty with a size, resized
    let mut x = cmd(&["sh", "-c", "stty size; read l; stty size"]);
    x.tty = true;
    x.interactive = true;
    x.tty_size = Some((100, 30));
    let p = t.spawn(x, CancellationToken::new()).await.unwrap();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("30 100") {
        seen.extend_from_slice(p.next().await.unwrap().unwrap().data());
    }
    p.resize(120, 40).await.unwrap();
    p.write(b"\n").await.unwrap();
    while let Some(c) = p.next().await {
        seen.extend_from_slice(c.unwrap().data());
    }
    assert!(
        String::from_utf8_lossy(&seen).contains("40 120"),
        "{:?}",
        String::from_utf8_lossy(&seen)
    );
    p.wait(&call(10)).await.unwrap();

    // kill
    let p = t
        .spawn(cmd(&["sleep", "60"]), CancellationToken::new())
        .await
        .unwrap();
    p.kill("SIGKILL").await.unwrap();
    let st = p.wait(&call(10)).await.unwrap();
    assert_ne!(st.exit_code, Some(0), "{st:?}");

    // a detached server outlives its launcher
    t.start_detached(cmd(&["sleep", "37"]), &call(10))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let out = t
        .exec(
            cmd(&["sh", "-c", "ps | grep -v grep | grep -c 'sleep 37'"]),
            CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1", "{out:?}");
    let e = t
        .start_detached(cmd(&["no-such-program"]), &call(10))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::ExecFailed, "{e:?}");

    // the agent tunnel's relay: an HTTP request to a server in the sandbox through a spawned nc
    t.write_file("/work/proj/index.html", b"tunnelled", None, &call(10))
        .await
        .unwrap();
    t.start_detached(
        cmd(&["httpd", "-f", "-p", "127.0.0.1:8099", "-h", "/work/proj"]),
        &call(10),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let relay = crate::core::tunnel::probe_relay(t.as_ref()).await.unwrap();
    let mut tun = crate::core::tunnel::Tunnel::open(t.as_ref(), relay, 8099)
        .await
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tun.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tun.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    let got = String::from_utf8_lossy(&got);
    assert!(
        got.starts_with("HTTP/1.") && got.ends_with("tunnelled"),
        "{got}"
    );
    drop(tun);

    // policy read-back and log, ports
    let rules = b.policy_rules(&call(10)).await.unwrap();
    assert!(
        rules.iter().all(|r| r.scope == "sandbox:v1-client"),
        "{rules:?}"
    );
    b.policy_log(Some("v1-client"), &call(10)).await.unwrap();
    b.policy_log(None, &call(10)).await.unwrap();
    let spec8080 = crate::core::sbx::PortSpec {
        sandbox_port: 8080,
        ..Default::default()
    };
    let ports = b
        .publish("v1-client", std::slice::from_ref(&spec8080), &call(20))
        .await
        .unwrap();
    assert_eq!(
        ports.iter().map(|p| p.sandbox_port).collect::<Vec<_>>(),
        [8080],
        "{ports:?}"
    );
    assert!(ports[0].host_port > 0, "{ports:?}");
    b.unpublish("v1-client", &[spec8080], &call(20))
        .await
        .unwrap();
    assert!(b.ports("v1-client", &call(10)).await.unwrap().is_empty());

    // lifecycle
    b.stop("v1-client", &call(60)).await.unwrap();
    assert_eq!(
        b.get("v1-client", &call(10)).await.unwrap().unwrap().status,
        "stopped"
    );
    let e = b.target("v1-client", &call(10)).await.err().unwrap();
    assert_eq!(e.code, ErrorCode::SandboxStopped);
    b.start("v1-client", &call(60)).await.unwrap();
    let t = b.target("v1-client", &call(10)).await.unwrap();
    assert_eq!(
        t.exec(cmd(&["true"]), CancellationToken::new())
            .await
            .unwrap()
            .exit_code,
        Some(0)
    );
    b.remove("v1-client", false, &call(60)).await.unwrap();
    assert!(b.get("v1-client", &call(10)).await.unwrap().is_none());
    d.stop().await;
}
