//! Multipart bodies (RFC 2046 framing) as the v1 files API uses them: `multipart/form-data` uploads and
//! `multipart/mixed` downloads. One reader and one writer, shared by the v1 client and LocalSandboxd's endpoint.
//!
//! Written by hand: the maintained crates (`multer`, `mime_multipart`) parse form-data only and stream it for
//! servers; the v1 bodies are whole in memory, of either kind, and need a strict closing delimiter.

use bytes::Bytes;

/// One part of a multipart body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The `name` of its `Content-Disposition`.
    pub name: String,
    /// Its `Content-Type`, if it had one.
    pub content_type: Option<String>,
    /// Its bytes, without the CRLF before the next delimiter.
    pub data: Bytes,
}

/// The boundary of a `multipart/…` Content-Type of the `expected` type (`multipart/form-data`, `multipart/mixed`).
pub fn boundary_of(ctype: &str, expected: &str) -> Option<String> {
    let mut parts = ctype.split(';');
    if !parts.next()?.trim().eq_ignore_ascii_case(expected) {
        return None;
    }
    parts
        .find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("boundary")
                .then(|| v.trim().trim_matches('"').to_string())
        })
        .filter(|b| !b.is_empty() && b.len() <= 70)
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if from > hay.len() {
        return None;
    }
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

/// Parse a whole multipart body whose parts carry `Content-Disposition: <disposition>; name=…` (`form-data` for
/// uploads, `attachment` for downloads). A preamble is skipped; `Content-Transfer-Encoding` is refused; the closing
/// delimiter is required (a body cut short is an error, never fewer parts). The error is a plain description.
pub fn parse(body: &Bytes, boundary: &str, disposition: &str) -> Result<Vec<Part>, String> {
    let delim = format!("--{boundary}");
    let bad = |m: &str| format!("malformed multipart body: {m}");
    let mut pos = if body.starts_with(delim.as_bytes()) {
        delim.len()
    } else {
        find(body, format!("\r\n{delim}").as_bytes(), 0)
            .ok_or_else(|| bad("no opening delimiter"))?
            + 2
            + delim.len()
    };
    let next_delim = format!("\r\n{delim}");
    let mut parts = Vec::new();
    loop {
        if body[pos..].starts_with(b"--") {
            return Ok(parts);
        }
        while body.get(pos).is_some_and(|b| *b == b' ' || *b == b'\t') {
            pos += 1;
        }
        if !body[pos..].starts_with(b"\r\n") {
            return Err(bad("a delimiter is not followed by CRLF"));
        }
        pos += 2;
        let (head, start) = if body[pos..].starts_with(b"\r\n") {
            ("", pos + 2)
        } else {
            let end =
                find(body, b"\r\n\r\n", pos).ok_or_else(|| bad("unterminated part headers"))?;
            (
                std::str::from_utf8(&body[pos..end])
                    .map_err(|_| bad("part headers are not UTF-8"))?,
                end + 4,
            )
        };
        let mut name = None;
        let mut content_type = None;
        for line in head.split("\r\n") {
            let (k, v) = line
                .split_once(':')
                .ok_or_else(|| bad("a header line without ':'"))?;
            match k.trim().to_ascii_lowercase().as_str() {
                "content-transfer-encoding" => {
                    return Err("Content-Transfer-Encoding is refused in multipart parts".into())
                }
                "content-type" => content_type = Some(v.trim().to_string()),
                "content-disposition" => {
                    let mut ps = v.split(';').map(str::trim);
                    if !ps
                        .next()
                        .is_some_and(|d| d.eq_ignore_ascii_case(disposition))
                    {
                        return Err(bad(&format!("Content-Disposition must be {disposition}")));
                    }
                    name = ps.find_map(|p| {
                        let (a, b) = p.split_once('=')?;
                        a.trim()
                            .eq_ignore_ascii_case("name")
                            .then(|| b.trim().trim_matches('"').to_string())
                    });
                }
                _ => {}
            }
        }
        let end = find(body, next_delim.as_bytes(), start)
            .ok_or_else(|| bad("truncated: no closing delimiter"))?;
        parts.push(Part {
            name: name.ok_or_else(|| bad("a part without Content-Disposition name"))?,
            content_type,
            data: body.slice(start..end),
        });
        pos = end + next_delim.len();
        if pos + 2 > body.len() {
            return Err(bad("truncated after a delimiter"));
        }
    }
}

/// A multipart body of `(name, content type, data)` parts with `Content-Disposition: <disposition>; name=…`,
/// closing delimiter included, and its boundary (one that none of the parts' data contains). Names are quoted in
/// `form-data` (RFC 7578) and bare in attachments, as the v1 contract spells a download's parts
/// (`attachment; name=metadata`).
pub fn write<D: AsRef<[u8]>>(disposition: &str, parts: &[(&str, &str, D)]) -> (String, Bytes) {
    let boundary = loop {
        let b = format!("sandboxd-{}", uuid::Uuid::new_v4().simple());
        if !parts
            .iter()
            .any(|p| find(p.2.as_ref(), b.as_bytes(), 0).is_some())
        {
            break b;
        }
    };
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.2.as_ref().len() + 128).sum());
    for (name, ctype, data) in parts {
        let name = if disposition == "form-data" {
            format!("\"{name}\"")
        } else {
            name.to_string()
        };
        out.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: {disposition}; name={name}\r\nContent-Type: {ctype}\r\n\r\n"
            )
            .as_bytes(),
        );
        out.extend_from_slice(data.as_ref());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (boundary, Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reader_and_the_writer_agree() {
        let parts: [(&str, &str, &[u8]); 2] = [
            ("metadata", "application/json", b"{}"),
            ("content", "application/octet-stream", b"\r\n--x\r\n"),
        ];
        let (b, body) = write("attachment", &parts);
        let back = parse(&body, &b, "attachment").unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].content_type.as_deref(), Some("application/json"));
        assert_eq!(
            (back[1].name.as_str(), &back[1].data[..]),
            ("content", &b"\r\n--x\r\n"[..])
        );
        // the other disposition is refused
        assert!(parse(&body, &b, "form-data").is_err());
        // the contract's spelling of a download part; form-data names quoted
        assert!(body
            .windows(45)
            .any(|w| w == b"Content-Disposition: attachment; name=content"));
        let (fb, form) = write("form-data", &parts);
        assert!(form
            .windows(46)
            .any(|w| w == b"Content-Disposition: form-data; name=\"content\""));
        assert_eq!(parse(&form, &fb, "form-data").unwrap()[0].name, "metadata");
        assert_eq!(
            boundary_of(
                "multipart/form-data; boundary=\"a b\"",
                "multipart/form-data"
            )
            .as_deref(),
            Some("a b")
        );
        assert!(boundary_of("text/plain; boundary=x", "multipart/form-data").is_none());
        assert!(boundary_of("multipart/mixed", "multipart/mixed").is_none());
    }

    #[test]
    fn preambles_empty_parts_and_cut_bodies() {
        let form = Bytes::from_static(b"preamble\r\n--B\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n--B\r\nContent-Disposition: form-data; name=\"b\"\r\n\r\n\r\n--B--");
        let p = parse(&form, "B", "form-data").unwrap();
        assert_eq!((p[0].name.as_str(), &p[0].data[..]), ("a", &b"1"[..]));
        assert_eq!((p[1].name.as_str(), &p[1].data[..]), ("b", &b""[..]));
        for cut in [
            &b"--B\r\n\r\nx"[..],
            b"--B\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n--B",
            b"--B\r\nContent-Disposition: form-data; name=a\r\n",
            b"nothing here",
        ] {
            assert!(
                parse(&Bytes::copy_from_slice(cut), "B", "form-data").is_err(),
                "{cut:?}"
            );
        }
        let encoded = Bytes::from_static(
            b"--B\r\nContent-Disposition: form-data; name=a\r\nContent-Transfer-Encoding: base64\r\n\r\nMQ==\r\n--B--",
        );
        assert!(parse(&encoded, "B", "form-data")
            .unwrap_err()
            .contains("Transfer-Encoding"));
    }
}
