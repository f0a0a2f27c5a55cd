//! The registry's own words when it refuses credentials. `oci-client` reports a 401 by its URL
//! only and drops the body, where a registry says why (`authentication required`, `invalid
//! username or password`, ...). One more request of the same URL, with the same credentials and
//! TLS settings, reads the OCI error envelope so the user sees those words.

use std::time::Duration;

use oci_client::errors::OciEnvelope;
use oci_client::secrets::RegistryAuth;

use crate::hosts::RegistryHost;

/// The most of the body read: an error envelope is a few hundred bytes.
const BODY_LIMIT: usize = 16 * 1024;
/// The most of the registry's words kept.
const WORDS_LIMIT: usize = 512;
/// How long the extra request may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The messages of the error envelope `url` answers with `auth`, joined with `; `; `None`
/// when the request fails or the body is not an envelope with messages.
pub(crate) async fn registry_words(
    endpoint: &RegistryHost,
    skip_verify: bool,
    url: &str,
    auth: &RegistryAuth,
) -> Option<String> {
    let mut builder = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .danger_accept_invalid_certs(endpoint.skip_verify.unwrap_or(skip_verify));
    for pem in &endpoint.ca_pem {
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(pem).ok()?);
    }
    let client = builder.build().ok()?;
    let request = match auth {
        RegistryAuth::Anonymous => client.get(url),
        RegistryAuth::Basic(user, password) => client.get(url).basic_auth(user, Some(password)),
        RegistryAuth::Bearer(token) => client.get(url).bearer_auth(token),
    };
    let mut response = request.send().await.ok()?;
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.ok()? {
        body.extend_from_slice(&chunk);
        if body.len() > BODY_LIMIT {
            return None;
        }
    }
    words_of(&body)
}

/// The messages of an OCI error envelope, bounded; `None` without any.
fn words_of(body: &[u8]) -> Option<String> {
    let envelope: OciEnvelope = serde_json::from_slice(body).ok()?;
    let words: Vec<&str> = envelope
        .errors
        .iter()
        .map(|e| e.message.trim())
        .filter(|m| !m.is_empty())
        .collect();
    if words.is_empty() {
        return None;
    }
    let mut text = words.join("; ");
    if text.len() > WORDS_LIMIT {
        let mut end = WORDS_LIMIT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_gives_its_messages_bounded() {
        let body = br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":[{"Type":"repository","Name":"bb","Action":"pull"}]}]}"#;
        assert_eq!(words_of(body).as_deref(), Some("authentication required"));
        let two =
            br#"{"errors":[{"code":"DENIED","message":"a"},{"code":"DENIED","message":" b "}]}"#;
        assert_eq!(words_of(two).as_deref(), Some("a; b"));
        let long = format!(
            r#"{{"errors":[{{"code":"DENIED","message":"{}"}}]}}"#,
            "é".repeat(400)
        );
        let words = words_of(long.as_bytes()).expect("words");
        assert!(
            words.len() <= WORDS_LIMIT + '…'.len_utf8(),
            "{}",
            words.len()
        );
        assert!(words.ends_with('…'));
    }

    #[test]
    fn no_envelope_or_no_message_gives_none() {
        assert_eq!(words_of(b"<html>401</html>"), None);
        assert_eq!(words_of(br#"{"errors":[{"code":"UNAUTHORIZED"}]}"#), None);
        assert_eq!(words_of(br#"{"errors":[]}"#), None);
    }
}
