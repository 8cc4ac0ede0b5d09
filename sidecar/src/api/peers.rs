//! Handlers of membership: `/peers` (reference) and `/consensus` (ours, for the operator).

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::StatusCode;
use libp2p::Multiaddr;
use warp::reply::Response;

use super::error::{json_response, no_content};
use super::routes::{Ctx, Query};
use super::stream::ndjson;
use crate::types::{
    parse_peer_id, parse_std_duration, AddPeer, Departure, DepartureStatus, Introduced, PeerAddresses, Vouch,
};
use crate::{Error, Result};

pub(crate) async fn list(ctx: Ctx) -> Response {
    ndjson(ctx.cluster.peers().map(Ok).boxed()).await
}

/// `POST /peers` with `{"peer_id": "...", "addresses": ["/ip4/.../tcp/9096"]}`: the added peer's ID.
pub(crate) async fn add(body: Bytes, ctx: Ctx) -> Result<Response> {
    let request: AddPeer =
        serde_json::from_slice(&body).map_err(|e| Error::BadRequest(format!("error decoding request body: {e}")))?;
    let peer = parse_peer_id(&request.peer_id)?;
    let id = ctx.cluster.add_peer(peer, parse_addresses(&request.addresses)?).await?;
    Ok(json_response(StatusCode::OK, &id))
}

fn parse_addresses(addresses: &[String]) -> Result<Vec<Multiaddr>> {
    let parse =
        |a: &String| a.parse::<Multiaddr>().map_err(|e| Error::BadRequest(format!("invalid address {a:?}: {e}")));
    addresses.iter().map(parse).collect()
}

/// The most members one `PUT /consensus/addresses` may name.
const MAX_INTRODUCED: usize = 1024;

/// `PUT /consensus/addresses` (ours): `[{"peer_id": ..., "addresses": [...]}, ...]`, where members
/// are now; the peer connects to them (see `Cluster::introduce`).
pub(crate) async fn introduce(body: Bytes, ctx: Ctx) -> Result<Response> {
    let request: Vec<PeerAddresses> =
        serde_json::from_slice(&body).map_err(|e| Error::BadRequest(format!("error decoding request body: {e}")))?;
    if request.len() > MAX_INTRODUCED {
        return Err(Error::BadRequest(format!("at most {MAX_INTRODUCED} peers at once")));
    }
    let peers = request
        .iter()
        .map(|p| Ok((parse_peer_id(&p.peer_id)?, parse_addresses(&p.addresses)?)))
        .collect::<Result<Vec<_>>>()?;
    let connecting = ctx.cluster.introduce(peers).await?;
    Ok(json_response(StatusCode::OK, &Introduced { connecting }))
}

/// `DELETE /peers/{peer}[?force=true]`: 204 once the removal is committed; 409 when it would leave
/// a cluster that cannot lose another peer while others are unreachable, unless forced.
pub(crate) async fn remove(peer: String, query: Query, ctx: Ctx) -> Result<Response> {
    let force = query.bool_param("force", false)?;
    ctx.cluster.remove_peer(parse_peer_id(&peer)?, force).await?;
    Ok(no_content())
}

/// `GET /consensus`.
pub(crate) async fn status(ctx: Ctx) -> Response {
    json_response(StatusCode::OK, &ctx.cluster.consensus_status())
}

/// `POST /consensus/init`: 409 when the peer already belongs to a cluster.
pub(crate) async fn init(ctx: Ctx) -> Result<Response> {
    Ok(json_response(StatusCode::OK, &ctx.cluster.init_cluster().await?))
}

/// `PUT /consensus/vouch` with `{"seconds": 60}` (ours): this member reports ready without a
/// leader for that long (at most ten minutes), or until it knows one (see `Cluster::vouch`).
pub(crate) async fn vouch(body: Bytes, ctx: Ctx) -> Result<Response> {
    let request: Vouch =
        serde_json::from_slice(&body).map_err(|e| Error::BadRequest(format!("error decoding request body: {e}")))?;
    let granted = ctx.cluster.vouch(Duration::from_secs(request.seconds))?;
    Ok(json_response(StatusCode::OK, &Vouch { seconds: granted.as_secs() }))
}

/// The longest `GET /consensus/departure?wait=` a request may ask for: a preStop hook asks again.
const MAX_DEPARTURE_WAIT: Duration = Duration::from_secs(600);

/// `GET /consensus/departure[?wait=30s]` (ours): this peer's departure, once decided or after
/// `wait` (at most ten minutes; none by default).
pub(crate) async fn departure(query: Query, ctx: Ctx) -> Result<Response> {
    let wait = match query.get("wait").filter(|w| !w.is_empty()) {
        None => Duration::ZERO,
        Some(text) => parse_std_duration(text)
            .filter(|wait| *wait <= MAX_DEPARTURE_WAIT)
            .ok_or_else(|| Error::BadRequest(format!("wait: {text:?} is not a duration of at most 10m")))?,
    };
    let departure = ctx.cluster.await_departure(wait).await;
    Ok(json_response(StatusCode::OK, &DepartureStatus { departure }))
}

/// `PUT /consensus/departure` with `{"departure": "restart"}` (ours): the pod only restarts, so
/// its stop must not wait for a removal. A removal is `DELETE /peers/{id}`, not a declaration.
pub(crate) async fn declare_departure(body: Bytes, ctx: Ctx) -> Result<Response> {
    let request: DepartureStatus =
        serde_json::from_slice(&body).map_err(|e| Error::BadRequest(format!("error decoding request body: {e}")))?;
    if request.departure != Departure::Restart {
        return Err(Error::BadRequest(
            "only a restart can be declared; a peer leaves through DELETE /peers/{id}".into(),
        ));
    }
    Ok(json_response(StatusCode::OK, &DepartureStatus { departure: ctx.cluster.declare_restart() }))
}
