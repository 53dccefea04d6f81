//! The raw Rust floor for T3 (`npm run bench`): stream an exec's stdout with nothing but tokio + hyper 1 on the
//! engine's Unix socket — exec create over one connection, `Upgrade: tcp` on start, 64 KiB raw reads, the 8-byte
//! frame header parsed by hand, the bytes counted and dropped. No JS, no SDK: what any client could reach.
//!
//! `stream-floor SOCKET CONTAINER CMD_JSON` runs CMD_JSON (a JSON array: the producer) and prints one JSON line:
//! `{ "bytes", "secs", "mibps", "cpuSecs", "exitCode" }`.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use std::time::Instant;
use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;

type Res = std::result::Result<(), Box<dyn std::error::Error + Send + Sync>>;

async fn send(
    sock: &str,
    method: &str,
    uri: &str,
    body: String,
    upgrade: bool,
) -> std::result::Result<
    hyper::Response<hyper::body::Incoming>,
    Box<dyn std::error::Error + Send + Sync>,
> {
    let io = TokioIo::new(UnixStream::connect(sock).await?);
    let (mut tx, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(conn.with_upgrades());
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("Host", "docker")
        .header("Content-Type", "application/json");
    if upgrade {
        req = req.header("Connection", "Upgrade").header("Upgrade", "tcp");
    }
    Ok(tx
        .send_request(req.body(Full::new(Bytes::from(body)))?)
        .await?)
}

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

async fn json(res: hyper::Response<hyper::body::Incoming>) -> serde_json::Value {
    let body = res
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Res {
    let args: Vec<String> = std::env::args().collect();
    let [_, sock, container, cmd] = &args[..] else {
        return Err("usage: stream-floor SOCKET CONTAINER CMD_JSON".into());
    };
    let cmd: serde_json::Value = serde_json::from_str(cmd)?;
    let t0 = Instant::now();
    let c0 = cpu_secs();
    let create = serde_json::json!({
        "AttachStdout": true, "AttachStderr": true, "Cmd": cmd
    });
    let res = send(
        sock,
        "POST",
        &format!("/v1.41/containers/{container}/exec"),
        create.to_string(),
        false,
    )
    .await?;
    let id = json(res).await["Id"]
        .as_str()
        .ok_or("exec create failed")?
        .to_string();
    let start = r#"{"Detach":false,"Tty":false}"#.to_string();
    let res = send(
        sock,
        "POST",
        &format!("/v1.41/exec/{id}/start"),
        start,
        true,
    )
    .await?;
    let mut io = TokioIo::new(hyper::upgrade::on(res).await?);
    let mut buf = vec![0u8; 64 * 1024];
    let (mut header, mut have, mut left, mut total) = ([0u8; 8], 0usize, 0usize, 0u64);
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
                    total += k as u64;
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
    let secs = t0.elapsed().as_secs_f64();
    let inspect = send(
        sock,
        "GET",
        &format!("/v1.41/exec/{id}/json"),
        String::new(),
        false,
    )
    .await?;
    let exit = json(inspect).await["ExitCode"].as_i64().unwrap_or(-1);
    println!(
        "{}",
        serde_json::json!({
            "bytes": total, "secs": secs, "mibps": total as f64 / 1048576.0 / secs,
            "cpuSecs": cpu_secs() - c0, "exitCode": exit
        })
    );
    Ok(())
}
