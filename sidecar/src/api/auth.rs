//! Authentication as the reference does it: HTTP Basic against `basic_auth_credentials`, or a Bearer
//! JWT (HS256) whose `iss` is a user name and whose signature uses that user's password.

use std::collections::BTreeMap;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use http::header::{HeaderValue, AUTHORIZATION, WWW_AUTHENTICATE};
use http::{HeaderMap, StatusCode};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};
use warp::reply::Response;

use super::error::error_response;

const REALM: &str = "Restricted IPFS Cluster API";

/// The authenticated user, handed to `POST /token` through the request extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct User(pub String);

/// Why a request was refused; each has the reference's message and challenge.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AuthError {
    Missing,
    BadCredentials,
    BadToken(String),
}

#[derive(Serialize, Deserialize)]
struct Claims {
    iss: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exp: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
}

#[derive(Clone, Debug)]
pub(crate) struct Auth {
    credentials: BTreeMap<String, String>,
}

impl Auth {
    pub(crate) fn new(credentials: BTreeMap<String, String>) -> Self {
        Auth { credentials }
    }

    /// Checks the `Authorization` header; returns the user it names.
    pub(crate) fn check(&self, headers: &HeaderMap) -> Result<User, AuthError> {
        let value = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).ok_or(AuthError::Missing)?;
        let (scheme, rest) = value.split_once(' ').ok_or(AuthError::Missing)?;
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = STANDARD.decode(rest.trim()).map_err(|_| AuthError::BadCredentials)?;
            let text = String::from_utf8(decoded).map_err(|_| AuthError::BadCredentials)?;
            let (user, password) = text.split_once(':').ok_or(AuthError::BadCredentials)?;
            if user.is_empty() || password.is_empty() {
                return Err(AuthError::BadCredentials);
            }
            self.basic_user(user, password).ok_or(AuthError::BadCredentials)
        } else if scheme.eq_ignore_ascii_case("bearer") {
            self.verify_token(rest.trim()).map_err(AuthError::BadToken)
        } else {
            Err(AuthError::Missing)
        }
    }

    /// The user these credentials name, compared with every user's in constant time: the time
    /// taken tells neither which users exist nor how much of a password was right.
    fn basic_user(&self, user: &str, password: &str) -> Option<User> {
        let mut found = None;
        for (name, expected) in &self.credentials {
            let matches = same_secret(user, name) & same_secret(password, expected);
            if bool::from(matches) {
                found = Some(User(name.clone()));
            }
        }
        found
    }

    /// Verifies a JWT: the key is the password of the user in `iss`, so the issuer is read first.
    pub(crate) fn verify_token(&self, token: &str) -> Result<User, String> {
        let issuer = unverified_issuer(token)?;
        let password = self.credentials.get(&issuer).ok_or("issuer not found")?;
        let mut validation = Validation::new(Algorithm::HS256);
        // Like the reference: any HMAC algorithm, never `none` or a public-key one.
        validation.algorithms = vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
        // The reference issues tokens without `exp`; an `exp` or `nbf` present is still enforced.
        validation.required_spec_claims.clear();
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.leeway = 0;
        let data = jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(password.as_bytes()), &validation)
            .map_err(|e| e.to_string())?;
        Ok(User(data.claims.iss))
    }

    /// A token for `user`, signed with their password (`POST /token`); `None` for an unknown user.
    pub(crate) fn issue_token(&self, user: &str) -> Option<String> {
        let password = self.credentials.get(user)?;
        let claims = Claims { iss: user.to_string(), exp: None, nbf: None };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(password.as_bytes()))
            .map_err(|e| tracing::error!(error = %e, "signing a token"))
            .ok()
    }
}

/// Whether `given` is `expected`, in a time that depends on neither: their SHA-256 digests, of one
/// length whatever theirs, are compared in constant time.
fn same_secret(given: &str, expected: &str) -> Choice {
    let digest = |text: &str| -> [u8; 32] { Sha256::digest(text.as_bytes()).into() };
    digest(given).ct_eq(&digest(expected))
}

fn unverified_issuer(token: &str) -> Result<String, String> {
    let payload = token.split('.').nth(1).ok_or("malformed token")?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).map_err(|_| "malformed token")?;
    #[derive(Deserialize)]
    struct Issuer {
        #[serde(default)]
        iss: String,
    }
    let issuer: Issuer = serde_json::from_slice(&bytes).map_err(|_| "malformed token")?;
    if issuer.iss.is_empty() {
        return Err("no issuer set".into());
    }
    Ok(issuer.iss)
}

/// 401 with the reference's message and `WWW-Authenticate` challenge(s).
pub(crate) fn unauthorized(err: &AuthError) -> Response {
    let basic = HeaderValue::from_str(&format!("Basic realm=\"{REALM}\"")).expect("ascii");
    let (message, challenges) = match err {
        AuthError::Missing => (
            "unauthorized: no auth provided",
            vec![HeaderValue::from_str(&format!("Bearer realm=\"{REALM}\"")).expect("ascii"), basic],
        ),
        AuthError::BadCredentials => ("unauthorized: access denied", vec![basic]),
        AuthError::BadToken(reason) => {
            tracing::debug!(reason, "rejected a bearer token");
            let bearer = format!("Bearer realm=\"{REALM}\", error=\"invalid_token\"");
            ("unauthorized: invalid token", vec![HeaderValue::from_str(&bearer).expect("ascii")])
        }
    };
    let mut resp = error_response(StatusCode::UNAUTHORIZED, message);
    for challenge in challenges {
        resp.headers_mut().append(WWW_AUTHENTICATE, challenge);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth::new([("alice".to_string(), "secret".to_string()), ("bob".to_string(), "hunter2".to_string())].into())
    }

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    fn basic(user: &str, pass: &str) -> HeaderMap {
        headers(&format!("Basic {}", STANDARD.encode(format!("{user}:{pass}"))))
    }

    fn sign(claims: serde_json::Value, key: &str) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(key.as_bytes()))
            .unwrap()
    }

    fn now() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
    }

    #[test]
    fn basic_auth() {
        let a = auth();
        assert_eq!(a.check(&basic("alice", "secret")), Ok(User("alice".into())));
        assert_eq!(a.check(&basic("alice", "hunter2")), Err(AuthError::BadCredentials));
        assert_eq!(a.check(&basic("mallory", "secret")), Err(AuthError::BadCredentials));
        assert_eq!(a.check(&basic("alice", "")), Err(AuthError::BadCredentials));
        assert_eq!(a.check(&headers("Basic !!!")), Err(AuthError::BadCredentials));
        assert_eq!(a.check(&HeaderMap::new()), Err(AuthError::Missing));
        assert_eq!(a.check(&headers("Digest abc")), Err(AuthError::Missing));
    }

    #[test]
    fn secrets_are_compared_whole() {
        let cases = [
            ("secret", "secret", true),
            ("", "", true),
            ("secret", "secreT", false),
            ("secret", "secret ", false),
            ("secre", "secret", false),
            ("", "secret", false),
            ("pässword", "pässword", true),
        ];
        for (given, expected, same) in cases {
            assert_eq!(bool::from(same_secret(given, expected)), same, "{given:?} vs {expected:?}");
        }
    }

    #[test]
    fn issued_tokens_verify_and_name_their_user() {
        let a = auth();
        let token = a.issue_token("bob").unwrap();
        assert_eq!(a.check(&headers(&format!("Bearer {token}"))), Ok(User("bob".into())));
        assert_eq!(a.check(&headers(&format!("bearer {token}"))), Ok(User("bob".into())));
        assert!(a.issue_token("mallory").is_none());
    }

    #[test]
    fn bad_tokens_are_refused() {
        let a = auth();
        let cases = [
            ("wrong password", sign(serde_json::json!({"iss": "alice"}), "not-the-password")),
            ("signed with another user's password", sign(serde_json::json!({"iss": "alice"}), "hunter2")),
            ("unknown issuer", sign(serde_json::json!({"iss": "mallory"}), "secret")),
            ("no issuer", sign(serde_json::json!({"sub": "alice"}), "secret")),
            ("expired", sign(serde_json::json!({"iss": "alice", "exp": now() - 10}), "secret")),
            ("not yet valid", sign(serde_json::json!({"iss": "alice", "nbf": now() + 3600}), "secret")),
            ("garbage", "a.b.c".to_string()),
        ];
        for (what, token) in cases {
            let got = a.check(&headers(&format!("Bearer {token}")));
            assert!(matches!(got, Err(AuthError::BadToken(_))), "{what}: {got:?}");
        }
        let future = sign(serde_json::json!({"iss": "alice", "exp": now() + 3600}), "secret");
        assert_eq!(a.check(&headers(&format!("Bearer {future}"))), Ok(User("alice".into())));
    }

    #[test]
    fn any_hmac_is_accepted_and_alg_none_is_not() {
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &serde_json::json!({"iss": "alice"}),
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        assert_eq!(auth().check(&headers(&format!("Bearer {token}"))), Ok(User("alice".into())));
        let unsigned = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(r#"{"iss":"alice"}"#)
        );
        assert!(matches!(auth().check(&headers(&format!("Bearer {unsigned}"))), Err(AuthError::BadToken(_))));
    }

    #[test]
    fn challenges_follow_the_failure() {
        let resp = unauthorized(&AuthError::BadCredentials);
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        let challenges: Vec<_> = resp.headers().get_all(WWW_AUTHENTICATE).iter().collect();
        assert_eq!(challenges, vec!["Basic realm=\"Restricted IPFS Cluster API\""]);
        let resp = unauthorized(&AuthError::Missing);
        assert_eq!(resp.headers().get_all(WWW_AUTHENTICATE).iter().count(), 2);
    }
}
