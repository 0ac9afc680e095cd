//! A server on loopback that speaks the part of Google Cloud Storage's XML
//! API a download uses, for the GCS fetcher's tests (the library's and
//! `overseer run`'s), and the little a fleet's store adds (`PUT` of an
//! object, a listing under a prefix): `GET` and `HEAD` of an object, with its ETag,
//! `Last-Modified`, `x-goog-generation` and custom metadata
//! (`x-goog-meta-*`), `304 Not Modified` for a matching `If-None-Match`, and
//! GCS's error codes (`NoSuchBucket`, `NoSuchKey`, 401 for a refused token).
//!
//! Every request must carry the token a service account key makes: a JWT
//! signed with RS256 by the key's private half, which the server verifies
//! with the public half, and whose issuer and key id must match and which
//! must not have expired. Keys are generated per test ([`ServiceAccount`]).
//!
//! Built on std threads only, so any test crate can include it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;

/// A service account made for a test: its key file's JSON (what the
/// console gives a user) and the public key the server checks tokens with.
pub struct ServiceAccount {
    /// The key file's contents.
    pub key_json: String,
    pub email: String,
    key_id: String,
    public_key: Vec<u8>,
}

impl ServiceAccount {
    /// A fresh 2048-bit RSA key for `name@test-project.iam.gserviceaccount.com`.
    pub fn generate(name: &str) -> ServiceAccount {
        let pair = KeyPair::generate(KeySize::Rsa2048).expect("generate an RSA key");
        let pkcs8 = pair.as_der().expect("encode the key as PKCS#8");
        let body = STANDARD.encode(pkcs8.as_ref());
        let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for line in body.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        let email = format!("{name}@test-project.iam.gserviceaccount.com");
        let key_id = format!("{name}-key-1");
        let key_json = serde_json::json!({
            "type": "service_account",
            "project_id": "test-project",
            "private_key_id": key_id,
            "private_key": pem,
            "client_email": email,
            "client_id": "1",
            "token_uri": "https://oauth2.googleapis.com/token",
        })
        .to_string();
        ServiceAccount {
            key_json,
            email,
            key_id,
            public_key: pair.public_key().as_ref().to_vec(),
        }
    }

    /// Why `token` is not this account's valid token, if it is not.
    fn refuse(&self, token: &str) -> Option<String> {
        let parts: Vec<&str> = token.split('.').collect();
        let [header, claims, signature] = parts[..] else {
            return Some("not a JWT".into());
        };
        let json = |part: &str| -> Option<serde_json::Value> {
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?).ok()
        };
        let (Some(header_json), Some(claims_json)) = (json(header), json(claims)) else {
            return Some("undecodable JWT".into());
        };
        if header_json["alg"] != "RS256" || header_json["kid"] != self.key_id.as_str() {
            return Some(format!("wrong algorithm or key id: {header_json}"));
        }
        if claims_json["iss"] != self.email.as_str() {
            return Some(format!("wrong issuer: {claims_json}"));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if claims_json["exp"].as_u64().is_none_or(|exp| exp <= now) {
            return Some(format!("expired: {claims_json}"));
        }
        let Ok(signature) = URL_SAFE_NO_PAD.decode(signature) else {
            return Some("undecodable signature".into());
        };
        let message = format!("{header}.{claims}");
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &self.public_key)
            .verify(message.as_bytes(), &signature)
            .err()
            .map(|_| "bad signature".to_string())
    }
}

/// One object: its bytes, ETag, generation and custom metadata.
#[derive(Clone)]
struct Object {
    bytes: Vec<u8>,
    etag: String,
    generation: u64,
    version: Option<String>,
}

/// What the server saw of one request.
#[derive(Debug, Clone)]
pub struct Hit {
    pub method: String,
    /// The object's name, decoded (or the raw path when it names no object).
    pub object: String,
    pub if_none_match: Option<String>,
    pub status: u16,
}

struct State {
    bucket: String,
    account: ServiceAccount,
    objects: Mutex<HashMap<String, Object>>,
    generation: AtomicU64,
    hits: Mutex<Vec<Hit>>,
    stop: AtomicBool,
}

/// The server; stops accepting when dropped.
pub struct GcsServer {
    pub addr: SocketAddr,
    state: Arc<State>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl GcsServer {
    /// Serves `bucket` to requests signed by `account`'s key.
    pub fn start(bucket: &str, account: ServiceAccount) -> GcsServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the GCS server");
        let addr = listener.local_addr().expect("its address");
        let state = Arc::new(State {
            bucket: bucket.to_string(),
            account,
            objects: Mutex::default(),
            generation: AtomicU64::new(1_700_000_000_000_000),
            hits: Mutex::default(),
            stop: AtomicBool::new(false),
        });
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if shared.stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let state = shared.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, &state);
                });
            }
        });
        GcsServer { addr, state }
    }

    /// The XML API's base URL (what `Gcs::endpoint` takes).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Uploads (or replaces) an object; a new generation and ETag each time.
    pub fn put(&self, object: &str, bytes: &[u8], version: Option<&str>) {
        let generation = self.state.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let object_entry = Object {
            bytes: bytes.to_vec(),
            etag: format!("\"{generation:x}{:x}\"", bytes.len()),
            generation,
            version: version.map(str::to_string),
        };
        lock(&self.state.objects).insert(object.to_string(), object_entry);
    }

    /// Every request so far.
    pub fn hits(&self) -> Vec<Hit> {
        lock(&self.state.hits).clone()
    }
}

impl Drop for GcsServer {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Decodes `%XX` escapes (object_store encodes every byte of the bucket's
/// and the object's names but letters and digits, `/` included).
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn error(code: &str, message: &str) -> Vec<u8> {
    format!(
        "<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
    )
    .into_bytes()
}

/// Answers the requests of one connection (keep-alive) until it closes.
fn serve(stream: TcpStream, state: &State) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || state.stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut words = line.split_whitespace();
        let method = words.next().unwrap_or("").to_string();
        let target = words.next().unwrap_or("/").to_string();
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 {
                return Ok(());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        // A PUT's body (bounded: a test's objects are small).
        let length: u64 = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut upload = Vec::new();
        (&mut reader)
            .take(length.min(256 << 20))
            .read_to_end(&mut upload)?;
        let (status, extra, body, object) = if method == "PUT" {
            store(state, &target, &headers, upload)
        } else {
            answer(state, &method, &target, &headers)
        };
        lock(&state.hits).push(Hit {
            method: method.clone(),
            object,
            if_none_match: headers.get("if-none-match").cloned(),
            status,
        });
        let reason = match status {
            200 => "OK",
            304 => "Not Modified",
            401 => "Unauthorized",
            404 => "Not Found",
            _ => "Bad Request",
        };
        let mut head = format!("HTTP/1.1 {status} {reason}\r\n");
        for (k, v) in &extra {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if status != 304 {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        out.write_all(head.as_bytes())?;
        if method != "HEAD" && status != 304 {
            out.write_all(&body)?;
        }
    }
}

type Answer = (u16, Vec<(&'static str, String)>, Vec<u8>, String);

/// Why a request's token is refused, as GCS answers it.
fn refused(state: &State, headers: &HashMap<String, String>, object: &str) -> Option<Answer> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.strip_prefix("Bearer "));
    let why = match token {
        Some(token) => state.account.refuse(token)?,
        None => "no bearer token".into(),
    };
    let body = error(
        "AuthenticationRequired",
        &format!("Invalid Credentials: {why}"),
    );
    Some((401, Vec::new(), body, object.to_string()))
}

/// `PUT /BUCKET/OBJECT`: stores the object (a new generation and ETag).
fn store(state: &State, target: &str, headers: &HashMap<String, String>, bytes: Vec<u8>) -> Answer {
    let path = target.split('?').next().unwrap_or(target);
    let Some((bucket, object)) = path
        .trim_start_matches('/')
        .split_once('/')
        .and_then(|(b, o)| Some((percent_decode(b)?, percent_decode(o)?)))
    else {
        return (
            400,
            Vec::new(),
            error("InvalidURI", "no object"),
            path.into(),
        );
    };
    if let Some(refused) = refused(state, headers, &object) {
        return refused;
    }
    if bucket != state.bucket {
        let body = error("NoSuchBucket", "The specified bucket does not exist.");
        return (404, Vec::new(), body, object);
    }
    let generation = state.generation.fetch_add(1, Ordering::Relaxed) + 1;
    let etag = format!("\"{generation:x}{:x}\"", bytes.len());
    let entry = Object {
        bytes,
        etag: etag.clone(),
        generation,
        version: None,
    };
    lock(&state.objects).insert(object.clone(), entry);
    let extra = vec![
        ("ETag", etag),
        ("x-goog-generation", generation.to_string()),
    ];
    (200, extra, Vec::new(), object)
}

/// `GET /BUCKET?list-type=2&prefix=P`: the objects under a prefix, in the
/// XML API's `ListBucketResult` (one page).
fn list(state: &State, bucket: &str, query: &str) -> Answer {
    if bucket != state.bucket {
        let body = error("NoSuchBucket", "The specified bucket does not exist.");
        return (404, Vec::new(), body, String::new());
    }
    let prefix = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("prefix="))
        .and_then(percent_decode)
        .unwrap_or_default();
    let objects = lock(&state.objects);
    let mut names: Vec<&String> = objects.keys().filter(|k| k.starts_with(&prefix)).collect();
    names.sort();
    let mut xml = format!(
        "<?xml version='1.0' encoding='UTF-8'?><ListBucketResult xmlns=\"http://doc.s3.amazonaws.com/2006-03-01\"><Name>{bucket}</Name><Prefix>{prefix}</Prefix><KeyCount>{}</KeyCount>",
        names.len()
    );
    for name in names {
        let o = &objects[name];
        xml.push_str(&format!(
            "<Contents><Key>{name}</Key><LastModified>2026-11-22T05:00:00.000Z</LastModified><ETag>{}</ETag><Size>{}</Size></Contents>",
            o.etag.replace('"', "&quot;"),
            o.bytes.len()
        ));
    }
    xml.push_str("</ListBucketResult>");
    let extra = vec![("Content-Type", "application/xml".to_string())];
    (200, extra, xml.into_bytes(), prefix)
}

fn answer(state: &State, method: &str, target: &str, headers: &HashMap<String, String>) -> Answer {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if method == "GET"
        && query.contains("list-type=2")
        && !path.trim_start_matches('/').contains('/')
    {
        if let Some(refused) = refused(state, headers, "") {
            return refused;
        }
        let bucket = percent_decode(path.trim_start_matches('/')).unwrap_or_default();
        return list(state, &bucket, query);
    }
    let Some((bucket, object)) = path.trim_start_matches('/').split_once('/') else {
        return (
            400,
            Vec::new(),
            error("InvalidURI", "no object"),
            path.into(),
        );
    };
    let (Some(bucket), Some(object)) = (percent_decode(bucket), percent_decode(object)) else {
        return (
            400,
            Vec::new(),
            error("InvalidURI", "bad escape"),
            path.into(),
        );
    };
    if method != "GET" && method != "HEAD" {
        return (400, Vec::new(), error("NotImplemented", method), object);
    }
    if let Some(refused) = refused(state, headers, &object) {
        return refused;
    }
    if bucket != state.bucket {
        let body = error("NoSuchBucket", "The specified bucket does not exist.");
        return (404, Vec::new(), body, object);
    }
    let Some(found) = lock(&state.objects).get(&object).cloned() else {
        let body = error("NoSuchKey", "The specified key does not exist.");
        return (404, Vec::new(), body, object);
    };
    let mut extra = vec![
        ("ETag", found.etag.clone()),
        ("Last-Modified", "Sun, 22 Nov 2026 05:00:00 GMT".to_string()),
        ("x-goog-generation", found.generation.to_string()),
        ("Content-Type", "application/octet-stream".to_string()),
    ];
    if let Some(version) = &found.version {
        extra.push(("x-goog-meta-version", version.clone()));
    }
    if headers.get("if-none-match") == Some(&found.etag) {
        return (304, extra, Vec::new(), object);
    }
    (200, extra, found.bytes, object)
}
