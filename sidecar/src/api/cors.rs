//! CORS with the reference's semantics (rs/cors): preflights are answered before authentication,
//! actual requests get the allow/expose headers when their origin and method are allowed.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};
use warp::reply::Response;

use super::RestApiConfig;

/// Headers a preflight may ask for when `cors_allowed_headers` is empty (rs/cors defaults).
const DEFAULT_ALLOWED_HEADERS: [&str; 4] = ["origin", "accept", "content-type", "x-requested-with"];

#[derive(Clone, Debug)]
pub(crate) struct Cors {
    origins: Vec<String>,
    methods: Vec<Method>,
    /// Lower-cased; `*` allows any.
    headers: Vec<String>,
    exposed: Option<HeaderValue>,
    credentials: bool,
    max_age_secs: u64,
}

impl Cors {
    pub(crate) fn new(config: &RestApiConfig) -> Self {
        let mut headers: Vec<String> = config.cors_allowed_headers.iter().map(|h| h.to_ascii_lowercase()).collect();
        if headers.is_empty() {
            headers = DEFAULT_ALLOWED_HEADERS.iter().map(|h| h.to_string()).collect();
        } else if !headers.iter().any(|h| h == "origin") {
            headers.push("origin".into());
        }
        let exposed = config.cors_exposed_headers.join(", ");
        Cors {
            origins: config.cors_allowed_origins.iter().map(|o| o.to_ascii_lowercase()).collect(),
            methods: config.cors_allowed_methods.iter().filter_map(|m| m.to_ascii_uppercase().parse().ok()).collect(),
            headers,
            exposed: (!exposed.is_empty()).then(|| HeaderValue::from_str(&exposed).ok()).flatten(),
            credentials: config.cors_allow_credentials,
            max_age_secs: config.cors_max_age.as_secs(),
        }
    }

    pub(crate) fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
        method == Method::OPTIONS && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    }

    /// The answer to a preflight: 204, with the allow headers only when everything asked is allowed.
    pub(crate) fn preflight(&self, headers: &HeaderMap) -> Response {
        let mut resp = super::error::no_content();
        *resp.status_mut() = StatusCode::NO_CONTENT;
        let out = resp.headers_mut();
        for vary in ["Origin", "Access-Control-Request-Method", "Access-Control-Request-Headers"] {
            out.append(header::VARY, HeaderValue::from_static(vary));
        }
        let Some(origin) = headers.get(header::ORIGIN).filter(|o| self.origin_allowed(o)) else {
            return resp;
        };
        let requested = headers
            .get(header::ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|m| m.to_str().ok())
            .and_then(|m| m.to_ascii_uppercase().parse::<Method>().ok());
        let Some(method) = requested.filter(|m| self.method_allowed(m)) else {
            return resp;
        };
        let asked = headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS).and_then(|h| h.to_str().ok()).unwrap_or("");
        if !self.headers_allowed(asked) {
            return resp;
        }
        self.allow_origin(origin, out);
        out.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_str(method.as_str()).expect("a method"));
        if !asked.trim().is_empty() {
            out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_str(asked).expect("was a header"));
        }
        if self.max_age_secs > 0 {
            out.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(self.max_age_secs));
        }
        resp
    }

    /// Adds the CORS headers of an actual (non-preflight) request to its response.
    pub(crate) fn decorate(&self, method: &Method, request: &HeaderMap, response: &mut HeaderMap) {
        let Some(origin) = request.get(header::ORIGIN) else { return };
        response.append(header::VARY, HeaderValue::from_static("Origin"));
        if !self.origin_allowed(origin) || !self.method_allowed(method) {
            return;
        }
        self.allow_origin(origin, response);
        if let Some(exposed) = &self.exposed {
            response.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, exposed.clone());
        }
    }

    /// Browsers refuse `*` together with credentials, so an allowed origin is echoed in that case.
    fn allow_origin(&self, origin: &HeaderValue, out: &mut HeaderMap) {
        let any = self.origins.iter().any(|o| o == "*");
        let value = if any && !self.credentials { HeaderValue::from_static("*") } else { origin.clone() };
        out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        if self.credentials {
            out.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        }
    }

    fn origin_allowed(&self, origin: &HeaderValue) -> bool {
        let Ok(origin) = origin.to_str() else { return false };
        let origin = origin.to_ascii_lowercase();
        self.origins.iter().any(|allowed| match allowed.split_once('*') {
            None => *allowed == origin,
            Some((prefix, suffix)) => {
                origin.len() >= prefix.len() + suffix.len() && origin.starts_with(prefix) && origin.ends_with(suffix)
            }
        })
    }

    fn method_allowed(&self, method: &Method) -> bool {
        method == Method::OPTIONS || self.methods.contains(method)
    }

    fn headers_allowed(&self, asked: &str) -> bool {
        asked
            .split(',')
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .all(|h| self.headers.iter().any(|allowed| allowed == "*" || *allowed == h))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (header::HeaderName::from_static(k), HeaderValue::from_static(v))).collect()
    }

    #[test]
    fn preflight_with_defaults() {
        let cors = Cors::new(&RestApiConfig::default());
        let asked = req(&[
            ("origin", "http://app.example"),
            ("access-control-request-method", "GET"),
            ("access-control-request-headers", "Content-Type"),
        ]);
        assert!(Cors::is_preflight(&Method::OPTIONS, &asked));
        let resp = cors.preflight(&asked);
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        let h = resp.headers();
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "http://app.example");
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_METHODS], "GET");
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_HEADERS], "Content-Type");
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert!(!h.contains_key(header::ACCESS_CONTROL_MAX_AGE));
    }

    #[test]
    fn preflight_refusals_carry_no_allow_headers() {
        let cors = Cors::new(&RestApiConfig::default());
        for asked in [
            req(&[("origin", "http://app.example"), ("access-control-request-method", "DELETE")]),
            req(&[
                ("origin", "http://app.example"),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "X-Custom"),
            ]),
        ] {
            let resp = cors.preflight(&asked);
            assert!(!resp.headers().contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN), "{asked:?}");
        }
    }

    #[test]
    fn configured_origins_methods_and_max_age() {
        let config = RestApiConfig {
            cors_allowed_origins: vec!["https://*.example.com".into()],
            cors_allowed_methods: vec!["GET".into(), "POST".into()],
            cors_allow_credentials: false,
            cors_max_age: std::time::Duration::from_secs(600),
            ..Default::default()
        };
        let cors = Cors::new(&config);
        let ok = req(&[("origin", "https://ui.example.com"), ("access-control-request-method", "POST")]);
        let resp = cors.preflight(&ok);
        assert_eq!(resp.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://ui.example.com");
        assert_eq!(resp.headers()[header::ACCESS_CONTROL_MAX_AGE], "600");
        assert!(!resp.headers().contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS));
        let other = req(&[("origin", "https://evil.test"), ("access-control-request-method", "POST")]);
        assert!(!cors.preflight(&other).headers().contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
    }

    #[test]
    fn actual_requests_get_exposed_headers_for_allowed_methods_only() {
        let cors = Cors::new(&RestApiConfig { cors_allow_credentials: false, ..Default::default() });
        let request = req(&[("origin", "http://app.example")]);
        let mut out = HeaderMap::new();
        cors.decorate(&Method::GET, &request, &mut out);
        assert_eq!(out[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert_eq!(
            out[header::ACCESS_CONTROL_EXPOSE_HEADERS],
            "Content-Type, X-Stream-Output, X-Chunked-Output, X-Content-Length"
        );
        let mut out = HeaderMap::new();
        cors.decorate(&Method::POST, &request, &mut out);
        assert!(!out.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
        let mut out = HeaderMap::new();
        cors.decorate(&Method::GET, &HeaderMap::new(), &mut out);
        assert!(out.is_empty());
    }
}
