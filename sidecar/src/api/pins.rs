//! `/allocations` and `/pins` handlers.

use futures::StreamExt;
use http::StatusCode;
use warp::reply::Response;

use super::error::{error_response, reply};
use super::routes::{Ctx, Query};
use super::status_lines;
use super::stream::{ndjson, ndjson_lines};
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
    let sheets =
        ctx.cluster.status_sheets(cids, query.is_true("local"), move |sheet| status_lines::render(&sheet, &filter));
    let lines = sheets.filter(|lines| futures::future::ready(lines.as_ref().map_or(true, |lines| !lines.is_empty())));
    Ok(ndjson_lines(lines.boxed()).await)
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

/// The path as the reference hands it on, checked first as the reference does (boxo's
/// `path.NewPath`): percent-decoded and without a trailing slash; `/ipfs/<cid>/...` and
/// `/ipld/<cid>/...` rooted at a valid CID, `/ipns/<name>/...` at a name; no empty, `.` or `..`
/// segments. The daemon is never asked about a path that is not one.
fn clean_path(raw: &str) -> Result<String> {
    let decoded = percent_decode(raw)?;
    let path = decoded.trim_end_matches('/');
    match path_problem(path) {
        None => Ok(path.to_string()),
        Some(problem) => Err(crate::Error::BadRequest(format!("error parsing path: invalid path {path:?}: {problem}"))),
    }
}

/// What makes `path` (`/<namespace>/<root>/...`) invalid, if anything.
fn path_problem(path: &str) -> Option<String> {
    let mut segments = path.split('/').skip(1);
    let namespace = segments.next().unwrap_or("");
    let Some(root) = segments.next().filter(|root| !root.is_empty()) else {
        return Some("no root after the namespace".into());
    };
    if let Some(segment) = std::iter::once(root).chain(segments).find(|s| s.is_empty() || *s == "." || *s == "..") {
        return Some(format!("segment {segment:?} is not allowed"));
    }
    match namespace {
        "ipfs" | "ipld" => parse_cid(root).err().map(|err| err.to_string()),
        "ipns" => None,
        other => Some(format!("unknown namespace {other:?}")),
    }
}

fn percent_decode(raw: &str) -> Result<String> {
    let bad = || crate::Error::BadRequest(format!("error parsing path: invalid escape in {raw:?}"));
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            // Both digits must be hex: `from_str_radix` alone would take a sign (`%+1`).
            let hex = raw.get(i + 1..i + 3).filter(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit())).ok_or_else(bad)?;
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

    const ROOT: &str = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG";

    #[test]
    fn pin_paths_are_cleaned() {
        let cases = [
            (format!("/ipfs/{ROOT}/a%20b/"), format!("/ipfs/{ROOT}/a b")),
            (format!("/ipld/{ROOT}"), format!("/ipld/{ROOT}")),
            ("/ipns/example.com/a..b/.c".into(), "/ipns/example.com/a..b/.c".into()),
        ];
        for (raw, clean) in cases {
            assert_eq!(clean_path(&raw).unwrap(), clean);
        }
    }

    #[test]
    fn bad_pin_paths_are_refused_with_the_reason() {
        let cases = [
            ("/ipfs/not-a-cid".to_string(), "error decoding Cid"),
            ("/ipld/not-a-cid/x".into(), "error decoding Cid"),
            ("/ipfs/../../etc/passwd".into(), "segment \"..\" is not allowed"),
            ("/ipfs/%2e%2e/etc".into(), "segment \"..\" is not allowed"),
            (format!("/ipfs/{ROOT}/a/../b"), "segment \"..\" is not allowed"),
            (format!("/ipfs/{ROOT}/./a"), "segment \".\" is not allowed"),
            ("/ipns/./x".into(), "segment \".\" is not allowed"),
            ("/ipfs//x".into(), "no root after the namespace"),
            ("/ipfs/".into(), "no root after the namespace"),
            (format!("/ipfs/{ROOT}//x"), "segment \"\" is not allowed"),
            (format!("/dns/{ROOT}"), "unknown namespace \"dns\""),
        ];
        for (raw, reason) in cases {
            let message = clean_path(&raw).unwrap_err().to_string();
            assert!(message.starts_with("error parsing path: invalid path"), "{message}");
            assert!(message.contains(reason), "{raw}: {message}");
        }
        for raw in ["/ipfs/%zz", "/ipfs/%+1", "/ipfs/%2", "/ipfs/%ff"] {
            assert!(clean_path(raw).unwrap_err().to_string().contains("invalid escape"), "{raw}");
        }
    }
}
