//! The network fetchers' rule for plain `http://`, and how a URL is shown.

use super::FetchError;

/// The network fetchers' rule for plain `http://`: allowed to a loopback
/// host (`localhost`, `127.0.0.0/8`, `[::1]`), anywhere else only with
/// consent (`allow_http(true)`; `overseer run --allow-http`), since anyone on
/// the path could read the request's credentials or replace the release.
/// Decided on the parsed URL, before anything is resolved or sent; other
/// schemes are left to the caller. `what` opens the message (`GET`, `the
/// checksum URL`, `s3://bucket: endpoint`).
pub(super) fn plain_http_rule(
    what: &str,
    url: &url::Url,
    allow_http: bool,
) -> Result<(), FetchError> {
    if url.scheme() == "http" && !allow_http && !is_loopback(url) {
        let url = shown(url);
        let subject = if what.is_empty() {
            url
        } else {
            format!("{what} {url}")
        };
        return Err(format!(
            "{subject}: plain http to a host that is not loopback is refused (anyone on the \
             path could read or replace what it carries): use https, or call \
             .allow_http(true) (overseer run: --allow-http) for a network you trust"
        )
        .into());
    }
    Ok(())
}

/// Applies the built-in fetchers' rule for plain `http://` to `url`: allowed
/// to a loopback host (`localhost`, `127.0.0.0/8`, `[::1]`), anywhere else
/// only with `allow_http`. `https://` passes. Nothing is resolved or sent:
/// for a fetcher of your own, or to check a setting before starting.
///
/// ```
/// use overseer::fetcher::check_plain_http;
/// assert!(check_plain_http("https://releases.example.com/app", false).is_ok());
/// assert!(check_plain_http("http://127.0.0.1:8080/app", false).is_ok());
/// assert!(check_plain_http("http://releases.internal/app", false).is_err());
/// assert!(check_plain_http("http://releases.internal/app", true).is_ok());
/// ```
pub fn check_plain_http(url: &str, allow_http: bool) -> Result<(), FetchError> {
    let parsed = url::Url::parse(url)
        .ok()
        .filter(|u| u.host_str().is_some_and(|h| !h.is_empty()))
        .ok_or_else(|| format!("{url:?} is not a URL: write it as https://HOST[:PORT]/..."))?;
    plain_http_rule("", &parsed, allow_http)
}

/// Whether a URL's host is loopback: `localhost`, an address in
/// `127.0.0.0/8`, or `[::1]`. Nothing is resolved: a name is loopback only
/// when it is `localhost`.
fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// A URL as shown in messages and `Release::source`: without `user:pass@`
/// (or a fragment, which is never sent).
pub(super) fn shown(url: &url::Url) -> String {
    let mut shown = url.clone();
    // These fail only for a URL that cannot hold credentials, so has none.
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_fragment(None);
    shown.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> url::Url {
        url::Url::parse(s).expect("test URL")
    }

    #[test]
    fn loopback_hosts() {
        let is_loopback = |url: &str| url::Url::parse(url).is_ok_and(|u| is_loopback(&u));
        for url in [
            "http://127.0.0.1:9000",
            "http://127.1.2.3",
            "http://localhost:9000/",
            "http://LOCALHOST/x",
            "http://[::1]:9000",
            "http://user@127.0.0.1:1/x",
        ] {
            assert!(is_loopback(url), "{url}");
        }
        for url in [
            "http://10.0.0.1:9000",
            "http://0.0.0.0:9000",
            "http://minio.internal",
            "http://[::2]:9000",
            "http://localhost.example.com",
            "http://127.0.0.1.example.com",
            "http://localhost@192.0.2.1/",
            "nonsense",
        ] {
            assert!(!is_loopback(url), "{url}");
        }
    }

    #[test]
    fn plain_http_needs_loopback_or_consent() {
        let far = url("http://u:secret@192.0.2.1/app");
        let err = plain_http_rule("GET", &far, false)
            .expect_err("refused")
            .to_string();
        assert!(
            err.contains("allow_http") && err.contains("192.0.2.1/app"),
            "{err}"
        );
        assert!(!err.contains("secret"), "{err}");
        assert!(plain_http_rule("GET", &far, true).is_ok());
        assert!(plain_http_rule("GET", &url("http://127.0.0.1:8/app"), false).is_ok());
        assert!(plain_http_rule("GET", &url("https://192.0.2.1/app"), false).is_ok());
        assert!(plain_http_rule("GET", &url("HTTP://192.0.2.1/app"), false).is_err());
    }
}
