//! Handlers of the peer-level endpoints: identity, health, monitor, gc, token, and ours
//! (`/readyz`, `/metrics`).

use http::header::{HeaderValue, CONTENT_TYPE};
use http::StatusCode;
use warp::reply::Response;

use super::auth::User;
use super::error::{error_response, json_response, reply};
use super::routes::{Ctx, Query};
use crate::types::{Token, Version, COMPATIBLE_VERSION};

pub(crate) async fn id(ctx: Ctx) -> Response {
    json_response(StatusCode::OK, &ctx.cluster.id().await)
}

pub(crate) async fn version() -> Response {
    json_response(StatusCode::OK, &Version { version: COMPATIBLE_VERSION.to_string() })
}

/// `POST /token`: a JWT for the user who authenticated this request (401 when auth is off).
pub(crate) async fn token(user: Option<User>, ctx: Ctx) -> Response {
    let token = ctx.auth.as_ref().zip(user).and_then(|(auth, user)| auth.issue_token(&user.0));
    match token {
        Some(token) => json_response(StatusCode::OK, &Token { token }),
        None => error_response(StatusCode::UNAUTHORIZED, "unauthorized"),
    }
}

pub(crate) async fn ipfs_gc(query: Query, ctx: Ctx) -> Response {
    reply(ctx.cluster.ipfs_gc(query.is_true("local")).await)
}

pub(crate) async fn graph(ctx: Ctx) -> Response {
    json_response(StatusCode::OK, &ctx.cluster.health_graph().await)
}

pub(crate) async fn bandwidth(ctx: Ctx) -> Response {
    json_response(StatusCode::OK, &ctx.cluster.bandwidth_by_protocol())
}

pub(crate) async fn alerts(ctx: Ctx) -> Response {
    json_response(StatusCode::OK, &ctx.cluster.alerts())
}

pub(crate) async fn metric_names(ctx: Ctx) -> Response {
    json_response(StatusCode::OK, &ctx.cluster.metric_names())
}

pub(crate) async fn metrics(name: String, ctx: Ctx) -> Response {
    json_response(StatusCode::OK, &ctx.cluster.metrics(&name))
}

/// Ours: 200 when ready, 503 otherwise, with the `Readiness` report either way.
pub(crate) async fn readyz(ctx: Ctx) -> Response {
    let readiness = ctx.cluster.readiness().await;
    let status = if readiness.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    json_response(status, &readiness)
}

/// Ours: the Prometheus text exposition (the one response that is not JSON).
pub(crate) async fn prometheus(ctx: Ctx) -> Response {
    let mut resp = Response::new(ctx.cluster.prometheus().into());
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    resp
}
