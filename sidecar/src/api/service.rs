//! The HTTP service in front of the routes: what the reference does in middleware (CORS preflight,
//! authentication, strict-slash 307, headers), plus body limits (see `body.rs`) and request metrics.
//! It also swaps in streaming bodies with trailers, which warp's own body type cannot carry.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, EXPECT, LOCATION, ORIGIN};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tower_service::Service as _;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use super::auth::{unauthorized, Auth};
use super::body::{BodyFault, BodyLimits, FaultSlot, RequestBody};
use super::cors::Cors;
use super::error::JSON;
use super::metrics::ApiMetrics;
use super::routes::{routes, Ctx, RouteLabel};
use super::stream::{abort_on_stream_error, ApiBody, BoxError, TrailerBody};
use super::RestApiConfig;
use crate::cluster::Cluster;

/// Paths that answer without credentials: liveness, readiness and metrics probes.
const OPEN_PATHS: [&str; 3] = ["/health", "/readyz", "/metrics"];

pub(crate) struct ApiService {
    cors: Cors,
    auth: Option<Arc<Auth>>,
    extra_headers: HeaderMap,
    max_body_size: u64,
    max_add_body_size: Option<u64>,
    /// `None`: bodies may take any time.
    read_timeout: Option<Duration>,
    metrics: ApiMetrics,
    routes: BoxedFilter<(Response,)>,
}

impl ApiService {
    pub(crate) fn new(cluster: Cluster, config: &RestApiConfig, metrics: ApiMetrics) -> crate::Result<Self> {
        let auth = config.basic_auth_credentials.clone().map(|c| Arc::new(Auth::new(c)));
        let mut extra_headers = HeaderMap::new();
        for (name, values) in &config.headers {
            let name: http::HeaderName =
                name.parse().map_err(|_| crate::Error::Config(format!("restapi.headers: bad header name {name:?}")))?;
            for value in values {
                let value = HeaderValue::from_str(value)
                    .map_err(|_| crate::Error::Config(format!("restapi.headers: bad value for {name}")))?;
                extra_headers.append(name.clone(), value);
            }
        }
        let ctx = Ctx { cluster, auth: auth.clone(), max_add_body_size: config.max_add_body_size };
        Ok(ApiService {
            cors: Cors::new(config),
            auth,
            extra_headers,
            max_body_size: config.max_body_size,
            max_add_body_size: config.max_add_body_size,
            read_timeout: Some(config.read_timeout).filter(|timeout| !timeout.is_zero()),
            metrics,
            routes: routes(ctx),
        })
    }

    pub(crate) async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Result<http::Response<ApiBody>, Infallible> {
        let started = Instant::now();
        let method = req.method().clone();
        let origin = req.headers().get(ORIGIN).cloned();
        let accepts_trailers = accepts_trailers(req.headers());
        // Everything the request causes on this peer logs under it (a forwarded write's leader
        // side logs under the leader's `rpc` span, with this peer as `from`).
        let span = tracing::info_span!("rest", %method, path = %req.uri().path());
        let limits = BodyLimits { max_bytes: self.body_limit(req.uri().path()), read_timeout: self.read_timeout };
        let (parts, incoming) = req.into_parts();
        let awaits_continue =
            parts.headers.get(EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let (body, fault) = RequestBody::new(incoming, limits, awaits_continue);
        let req = Request::from_parts(parts, body);
        let (mut resp, route) = tracing::Instrument::instrument(self.dispatch(req, &fault), span).await;

        let headers = resp.headers_mut();
        if let Some(origin) = origin {
            let mut request = HeaderMap::new();
            request.insert(ORIGIN, origin);
            self.cors.decorate(&method, &request, headers);
        }
        for (name, value) in &self.extra_headers {
            headers.append(name, value.clone());
        }
        headers.entry(CONTENT_TYPE).or_insert(JSON);
        self.metrics.observe(route, &method, resp.status().as_u16(), started.elapsed());
        tracing::debug!(%method, route, status = resp.status().as_u16(), "request");

        let streamed = resp.extensions().get::<TrailerBody>().and_then(TrailerBody::take);
        let streamed = streamed.map(|body| if accepts_trailers { body } else { abort_on_stream_error(body) });
        Ok(resp.map(|body| streamed.unwrap_or_else(|| body.map_err(|e| Box::new(e) as BoxError).boxed_unsync())))
    }

    fn body_limit(&self, path: &str) -> Option<u64> {
        if path == "/add" {
            self.max_add_body_size
        } else {
            Some(self.max_body_size)
        }
    }

    /// The response and the route label it is counted under. A body that could not be read is
    /// answered for what went wrong, whatever the route made of it.
    async fn dispatch(&self, mut req: Request<RequestBody>, fault: &FaultSlot) -> (Response, &'static str) {
        if Cors::is_preflight(req.method(), req.headers()) {
            return (self.cors.preflight(req.headers()), "preflight");
        }
        let path = req.uri().path();
        if let Some(auth) = &self.auth {
            if req.method() != Method::OPTIONS && !OPEN_PATHS.contains(&path) {
                match auth.check(req.headers()) {
                    Ok(user) => {
                        req.extensions_mut().insert(user);
                    }
                    Err(err) => return (unauthorized(&err), "unauthorized"),
                }
            }
        }
        let path = req.uri().path();
        if path.len() > 1 && path.ends_with('/') {
            return (redirect_without_slash(req.uri()), "redirect");
        }
        let declared = req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if let (Some(limit), Some(declared)) = (self.body_limit(path), declared) {
            if declared > limit {
                let fault = BodyFault::TooLarge { limit };
                return (fault.response(), fault.label());
            }
        }
        let resp = warp::service(self.routes.clone()).call(req).await.unwrap_or_else(|never| match never {});
        if let Some(fault) = fault.get() {
            return (fault.response(), fault.label());
        }
        let route = resp.extensions().get::<RouteLabel>().map_or("unmatched", |r| r.0);
        (resp, route)
    }
}

/// hyper writes trailers only to clients that sent `TE: trailers` (the reference's Go server sends
/// them to everyone, and Go clients do not ask).
fn accepts_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::TE)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("trailers"))))
}

/// 307 keeps the method and body, unlike 301 (reference issue #1415). The target is a path on this
/// server: leading slashes collapse to one, since `//host/...` would send the client to `host` (and
/// browsers read a backslash as a slash).
fn redirect_without_slash(uri: &http::Uri) -> Response {
    let path = format!("/{}", uri.path().trim_start_matches(['/', '\\']).trim_end_matches('/'));
    let location = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    let mut resp = Response::new(Vec::<u8>::new().into());
    *resp.status_mut() = StatusCode::TEMPORARY_REDIRECT;
    if let Ok(value) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(LOCATION, value);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailers_are_accepted_only_when_asked_for() {
        let mut headers = HeaderMap::new();
        assert!(!accepts_trailers(&headers));
        headers.insert(http::header::TE, HeaderValue::from_static("gzip, Trailers"));
        assert!(accepts_trailers(&headers));
    }

    #[test]
    fn trailing_slash_redirects_keep_the_query_and_stay_on_this_server() {
        let cases = [
            ("/pins/?filter=pinned", "/pins?filter=pinned"),
            ("/id//", "/id"),
            ("//", "/"),
            ("//evil.example/", "/evil.example"),
            ("///evil.example//x/?a=b", "/evil.example//x?a=b"),
            ("/\\evil.example/", "/evil.example"),
        ];
        for (uri, location) in cases {
            let resp = redirect_without_slash(&uri.parse().unwrap());
            assert_eq!(resp.status(), StatusCode::TEMPORARY_REDIRECT);
            assert_eq!(resp.headers()[LOCATION], location, "{uri}");
        }
    }
}
