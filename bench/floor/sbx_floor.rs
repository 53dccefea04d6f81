//! The raw Rust floor for T8 (`npm run bench`): the sbx exec route with nothing but tokio + hyper 1 on the sbx
//! daemon's Unix socket — `POST /sandbox/{name}/exec/attach` with `Upgrade: tcp` on a connection of its own, 64 KiB
//! raw reads, the 8-byte stdcopy frame header parsed by hand, the bytes counted and dropped, and the exit code from
//! `GET /sandbox/{name}/exec/{id}` over one kept-alive control connection. No JS, no SDK: what any client of the
//! route could reach.
//!
//! `sbx-floor stream SOCKET SANDBOX CMD_JSON` runs CMD_JSON (a JSON array: the producer) once and prints one JSON
//! line: `{ "bytes", "secs", "mibps", "cpuSecs", "exitCode" }`.
//!
//! `sbx-floor exec SOCKET SANDBOX N CMD_JSON ENV_JSON EXPECT` runs CMD_JSON (with ENV_JSON, a JSON object) once to
//! warm up, then N times in sequence, and prints `{ "lat": [ms…], "failures" }`: a run fails unless its stdout is
//! EXPECT and its exit code 0.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::Request;
use hyper_util::rt::TokioIo;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

type Error = Box<dyn std::error::Error + Send + Sync>;
type Res<T> = std::result::Result<T, Error>;

fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let f: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// One exec's output: stdout bytes counted (and kept when `keep`), the exec id.
struct Drained {
    exec_id: String,
    stdout_bytes: u64,
    stdout: Vec<u8>,
}

/// Attach `body` on a fresh connection, close its stdin, drain the stdcopy stream to its end.
async fn attach_and_drain(sock: &str, sandbox: &str, body: String, keep: bool) -> Res<Drained> {
    let io = TokioIo::new(UnixStream::connect(sock).await?);
    let (mut tx, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(conn.with_upgrades());
    let req = Request::post(format!("/sandbox/{sandbox}/exec/attach"))
        .header("Host", "localhost")
        .header("Content-Type", "application/json")
        .header("Connection", "Upgrade")
        .header("Upgrade", "tcp")
        .body(Full::new(Bytes::from(body)))?;
    let res = tx.send_request(req).await?;
    if res.status().as_u16() != 101 {
        return Err(format!("attach answered {}", res.status()).into());
    }
    let exec_id = res
        .headers()
        .get("Sandboxes-Exec-Id")
        .and_then(|v| v.to_str().ok())
        .ok_or("no Sandboxes-Exec-Id")?
        .to_string();
    let mut io = TokioIo::new(hyper::upgrade::on(res).await?);
    // no stdin: half-close it, as the SDK does, so the exec never waits on it
    io.shutdown().await?;
    let mut buf = vec![0u8; 64 * 1024];
    let (mut header, mut have, mut left) = ([0u8; 8], 0usize, 0usize);
    let mut out = Drained {
        exec_id,
        stdout_bytes: 0,
        stdout: Vec::new(),
    };
    loop {
        let n = io.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        let mut i = 0;
        while i < n {
            if left > 0 {
                let k = left.min(n - i);
                if header[0] == 1 {
                    out.stdout_bytes += k as u64;
                    if keep {
                        out.stdout.extend_from_slice(&buf[i..i + k]);
                    }
                }
                left -= k;
                i += k;
            } else {
                header[have] = buf[i];
                have += 1;
                i += 1;
                if have == 8 {
                    left =
                        u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
                    have = 0;
                }
            }
        }
    }
    Ok(out)
}

/// The kept-alive control connection for exec state.
async fn control(sock: &str) -> Res<SendRequest<Empty<Bytes>>> {
    let io = TokioIo::new(UnixStream::connect(sock).await?);
    let (tx, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(conn);
    Ok(tx)
}

/// The exec's exit code once it is no longer running, polled with the SDK's backoff (at once, then 2 ms doubling
/// to 100 ms): every poll is an inspect in the sandbox's engine, and polling every millisecond took CPU from the
/// exec it waited for on a busy machine.
async fn exit_code(
    ctl: &mut SendRequest<Empty<Bytes>>,
    sandbox: &str,
    exec_id: &str,
) -> Res<Option<i64>> {
    let mut pause = std::time::Duration::from_millis(2);
    for _ in 0..100 {
        ctl.ready().await?;
        let req = Request::get(format!("/sandbox/{sandbox}/exec/{exec_id}"))
            .header("Host", "localhost")
            .body(Empty::new())?;
        let body = ctl.send_request(req).await?.into_body().collect().await?;
        let v: serde_json::Value = serde_json::from_slice(&body.to_bytes())?;
        if v["running"].as_bool() != Some(true) {
            return Ok(v["exit_code"].as_i64());
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_millis(100));
    }
    Ok(None)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    match &args[1..] {
        [mode, sock, sandbox, cmd] if mode == "stream" => {
            let cmd: serde_json::Value = serde_json::from_str(cmd)?;
            let body = serde_json::json!({ "cmd": cmd, "tty": false }).to_string();
            let mut ctl = control(sock).await?;
            let t0 = Instant::now();
            let c0 = cpu_secs();
            let d = attach_and_drain(sock, sandbox, body, false).await?;
            let secs = t0.elapsed().as_secs_f64();
            let cpu = cpu_secs() - c0;
            let exit = exit_code(&mut ctl, sandbox, &d.exec_id).await?.unwrap_or(-1);
            println!(
                "{}",
                serde_json::json!({
                    "bytes": d.stdout_bytes, "secs": secs,
                    "mibps": d.stdout_bytes as f64 / 1048576.0 / secs,
                    "cpuSecs": cpu, "exitCode": exit
                })
            );
            Ok(())
        }
        [mode, sock, sandbox, n, cmd, env, expect] if mode == "exec" => {
            let n: usize = n.parse()?;
            let cmd: serde_json::Value = serde_json::from_str(cmd)?;
            let env: serde_json::Map<String, serde_json::Value> = serde_json::from_str(env)?;
            let env: Vec<String> = env
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect();
            let body = serde_json::json!({ "cmd": cmd, "env": env, "tty": false }).to_string();
            let mut ctl = control(sock).await?;
            let mut lat = Vec::with_capacity(n);
            let mut failures = 0;
            for i in 0..=n {
                let t0 = Instant::now();
                let ok = match attach_and_drain(sock, sandbox, body.clone(), true).await {
                    Ok(d) => {
                        let code = exit_code(&mut ctl, sandbox, &d.exec_id).await?;
                        code == Some(0) && d.stdout == expect.as_bytes()
                    }
                    Err(_) => false,
                };
                // the first run warms the connection path and the daemon: not counted
                if i > 0 {
                    lat.push(t0.elapsed().as_secs_f64() * 1000.0);
                    if !ok {
                        failures += 1;
                    }
                }
            }
            println!(
                "{}",
                serde_json::json!({ "lat": lat, "failures": failures })
            );
            Ok(())
        }
        _ => Err(
            "usage: sbx-floor stream SOCKET SANDBOX CMD_JSON | exec SOCKET SANDBOX N CMD_JSON ENV_JSON EXPECT"
                .into(),
        ),
    }
}
