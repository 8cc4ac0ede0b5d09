//! `/allocations` and `/pins` handlers.

use http::StatusCode;
use warp::reply::Response;

use super::error::{error_response, reply};
use super::routes::{Ctx, Query};
use super::stream::ndjson;
use crate::cluster::PinTypeFilter;
use crate::types::{parse_cid, PinOptions, StatusFilter};
use crate::Result;

pub(crate) async fn allocations(query: Query, ctx: Ctx) -> Response {
    match PinTypeFilter::parse(&query.list("filter").join(",")) {
        Ok(filter) => ndjson(ctx.cluster.allocations(filter)).await,
        Err(_) => error_response(StatusCode::BAD_REQUEST, "invalid filter value"),
    }
}

pub(crate) async fn allocation(cid: String, ctx: Ctx) -> Result<Response> {
    let cid = parse_cid(&cid)?;
    Ok(reply(ctx.cluster.allocation(&cid).await))
}

/// `GET /pins`: `filter` (status names, composites allowed), `cids` (only those), `local=true`.
pub(crate) async fn status_all(query: Query, ctx: Ctx) -> Result<Response> {
    let Ok(filter) = StatusFilter::parse(&query.list("filter").join(",")) else {
        return Ok(error_response(StatusCode::BAD_REQUEST, "invalid filter value"));
    };
    let cids = query.list("cids");
    let cids = if cids.is_empty() { None } else { Some(cids.into_iter().map(parse_cid).collect::<Result<Vec<_>>>()?) };
    Ok(ndjson(ctx.cluster.status_all(filter, cids, query.is_true("local"))).await)
}

pub(crate) async fn status(cid: String, query: Query, ctx: Ctx) -> Result<Response> {
    let cid = parse_cid(&cid)?;
    Ok(reply(ctx.cluster.status(&cid, query.is_true("local")).await))
}

pub(crate) async fn pin(cid: String, query: Query, ctx: Ctx) -> Result<Response> {
    let cid = parse_cid(&cid)?;
    let options = PinOptions::from_query(query.pairs())?;
    Ok(reply(ctx.cluster.pin(cid, options).await))
}

pub(crate) async fn pin_path(path: String, query: Query, ctx: Ctx) -> Result<Response> {
    let path = clean_path(&path)?;
    let options = PinOptions::from_query(query.pairs())?;
    Ok(reply(ctx.cluster.pin_path(&path, options).await))
}

pub(crate) async fn unpin(cid: String, ctx: Ctx) -> Result<Response> {
    let cid = parse_cid(&cid)?;
    Ok(reply(ctx.cluster.unpin(&cid).await))
}

pub(crate) async fn unpin_path(path: String, ctx: Ctx) -> Result<Response> {
    let path = clean_path(&path)?;
    Ok(reply(ctx.cluster.unpin_path(&path).await))
}

pub(crate) async fn recover(cid: String, query: Query, ctx: Ctx) -> Result<Response> {
    let cid = parse_cid(&cid)?;
    Ok(reply(ctx.cluster.recover(&cid, query.is_true("local")).await))
}

pub(crate) async fn recover_all(query: Query, ctx: Ctx) -> Response {
    ndjson(ctx.cluster.recover_all(query.is_true("local"))).await
}

/// The path as the reference hands it on: percent-decoded, without a trailing slash, and with a
/// root that is at least a CID-looking segment.
fn clean_path(raw: &str) -> Result<String> {
    let decoded = percent_decode(raw)?;
    let path = decoded.trim_end_matches('/');
    let root = path.split('/').nth(2).unwrap_or("");
    if root.is_empty() || path.contains("//") {
        return Err(crate::Error::BadRequest(format!("error parsing path: invalid path {path:?}")));
    }
    Ok(path.to_string())
}

fn percent_decode(raw: &str) -> Result<String> {
    let bad = || crate::Error::BadRequest(format!("error parsing path: invalid escape in {raw:?}"));
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = raw.get(i + 1..i + 3).ok_or_else(bad)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_paths_are_cleaned() {
        assert_eq!(clean_path("/ipfs/QmRoot/a%20b/").unwrap(), "/ipfs/QmRoot/a b");
        assert_eq!(clean_path("/ipns/example.com").unwrap(), "/ipns/example.com");
        assert!(clean_path("/ipfs//x").is_err());
        assert!(clean_path("/ipfs/%zz").is_err());
    }
}
