//! Contract tests of the REST API over loopback: status codes, headers, JSON shapes, NDJSON framing
//! and the `X-Stream-Error` trailer, checked on the raw wire (a TcpStream, no HTTP client library).
//!
//! Every test starts a real `Cluster` with the in-process fake IPFS daemon.

mod support;

use futures::TryStreamExt;
use sidecar::api::RestApiConfig;
use sidecar::client::{AddFile, Client};
use sidecar::types::time::GO_ZERO_TIME;
use sidecar::types::{parse_cid, PinOptions};
use support::*;

const CID: &str = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG";

const PIN_KEYS: [&str; 16] = [
    "replication_factor_min",
    "replication_factor_max",
    "name",
    "mode",
    "shard_size",
    "user_allocations",
    "expire_at",
    "metadata",
    "pin_update",
    "origins",
    "cid",
    "type",
    "allocations",
    "max_depth",
    "reference",
    "timestamp",
];
const GPI_KEYS: [&str; 7] = ["cid", "name", "allocations", "origins", "created", "metadata", "peer_map"];

// ---- transport: only `Cluster::start` of the facade is involved ----

#[tokio::test]
async fn version_health_and_unknown_routes() {
    let s = server(RestApiConfig::default()).await;
    let r = get(s.addr, "/version").await;
    assert_eq!((r.status, r.header("content-type")), (200, Some("application/json")));
    assert_eq!(r.json(), serde_json::json!({"version": "1.1.6"}));
    let r = get(s.addr, "/health").await;
    assert_eq!((r.status, r.body.len()), (204, 0));
    get(s.addr, "/nope").await.assert_error(404, "not found");
    assert_eq!(get(s.addr, "/nope").await.json()["message"], "not found");
    send(s.addr, "PUT", "/version").await.assert_error(405, "method not allowed");
}

#[tokio::test]
async fn trailing_slash_is_a_307_to_the_path_without_it() {
    let s = server(RestApiConfig::default()).await;
    let r = send(s.addr, "POST", &format!("/pins/{CID}/?replication=1")).await;
    assert_eq!(r.status, 307);
    assert_eq!(r.header("location"), Some(format!("/pins/{CID}?replication=1").as_str()));
}

#[tokio::test]
async fn invalid_cids_are_400_with_the_reference_text() {
    let s = server(RestApiConfig::default()).await;
    for (method, path) in [
        ("GET", "/pins/not-a-cid"),
        ("POST", "/pins/not-a-cid"),
        ("DELETE", "/pins/not-a-cid"),
        ("POST", "/pins/not-a-cid/recover"),
        ("GET", "/allocations/not-a-cid"),
        ("GET", "/pins?cids=not-a-cid"),
    ] {
        send(s.addr, method, path).await.assert_error(400, "error decoding Cid: ");
    }
}

#[tokio::test]
async fn invalid_options_and_filters_are_400() {
    let s = server(RestApiConfig::default()).await;
    let pin = |q: &str| format!("/pins/{CID}?{q}");
    send(s.addr, "POST", &pin("replication-min=x")).await.assert_error(400, "parameter replication-min invalid");
    send(s.addr, "POST", &pin("replication-min=3&replication-max=1")).await.assert_error(400, "replication-min");
    send(s.addr, "POST", &pin("mode=sideways")).await.assert_error(400, "parameter mode invalid");
    get(s.addr, "/pins?filter=bogus").await.assert_error(400, "invalid filter value");
    get(s.addr, "/allocations?filter=bogus").await.assert_error(400, "invalid filter value");
    let peer = libp2p_identity::PeerId::random();
    send(s.addr, "DELETE", &format!("/peers/{peer}?force=maybe")).await.assert_error(400, "parameter force invalid");
    send(s.addr, "DELETE", &format!("/peers/{peer}?force=true"))
        .await
        .assert_error(404, &format!("{peer} is not a cluster member"));
}

/// Expiries and durations past what a date can hold are a 400, not a panic that drops the
/// connection; the peer answers on.
#[tokio::test]
async fn expiries_out_of_range_are_400() {
    let s = server(RestApiConfig::default()).await;
    let huge = format!("{}s", "9".repeat(400));
    for ttl in ["300000y", "9000000000000000s", "18446744073709551616.5s", &huge] {
        send(s.addr, "POST", &format!("/pins/{CID}?expire-in={ttl}")).await.assert_error(400, "expire-in");
    }
    assert_eq!(get(s.addr, "/id").await.status, 200);
}

#[tokio::test]
async fn bodies_over_the_limit_are_413() {
    let config = RestApiConfig { max_body_size: 16, max_add_body_size: Some(64), ..Default::default() };
    let s = server(config).await;
    let r = raw(s.addr, &format!("POST /pins/{CID} HTTP/1.1\r\nContent-Length: 100"), &[b'x'; 100]).await;
    r.assert_error(413, "request body exceeds 16 bytes");
    // A chunked upload without Content-Length is cut off by the multipart reader.
    let part = format!(
        "--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big\"\r\n\r\n{}\r\n--B--\r\n",
        "y".repeat(200)
    );
    let chunked = format!("{:x}\r\n{part}\r\n0\r\n\r\n", part.len());
    let head = "POST /add HTTP/1.1\r\nContent-Type: multipart/form-data; boundary=B\r\nTransfer-Encoding: chunked";
    raw(s.addr, head, chunked.as_bytes()).await.assert_error(413, "request body exceeds 64 bytes");
}

#[tokio::test]
async fn malformed_add_requests_are_400() {
    let s = server(RestApiConfig::default()).await;
    let r = raw(s.addr, "POST /add HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 2", b"{}").await;
    r.assert_error(400, "request Content-Type isn't multipart/form-data");
    let body = b"this is not multipart";
    let head = format!(
        "POST /add HTTP/1.1\r\nContent-Type: multipart/form-data; boundary=B\r\nContent-Length: {}",
        body.len()
    );
    raw(s.addr, &head, body).await.assert_error(400, "");
    let head = "POST /add?format=zip HTTP/1.1\r\nContent-Type: multipart/form-data; boundary=B\r\nContent-Length: 0";
    raw(s.addr, head, b"").await.assert_error(400, "unknown add format: zip");
}

#[tokio::test]
async fn authentication_basic_and_jwt() {
    let s = server(with_auth()).await;
    let r = get(s.addr, "/version").await;
    r.assert_error(401, "unauthorized: no auth provided");
    assert!(r.headers_named("www-authenticate").contains(&"Basic realm=\"Restricted IPFS Cluster API\""), "{r:?}");
    let r = raw(s.addr, &format!("GET /version HTTP/1.1\r\n{}", basic("admin", "wrong")), b"").await;
    r.assert_error(401, "unauthorized: access denied");
    assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"Restricted IPFS Cluster API\""));
    let r = raw(s.addr, &format!("GET /version HTTP/1.1\r\n{}", basic("admin", "s3cret")), b"").await;
    assert_eq!(r.status, 200);
    // The liveness probe needs no credentials.
    assert_eq!(get(s.addr, "/health").await.status, 204);

    let r =
        raw(s.addr, &format!("POST /token HTTP/1.1\r\nContent-Length: 0\r\n{}", basic("admin", "s3cret")), b"").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(keys(&r.json()), set(&["token"]));
    let token = r.json()["token"].as_str().unwrap().to_string();
    let r = raw(s.addr, &format!("GET /version HTTP/1.1\r\nAuthorization: Bearer {token}"), b"").await;
    assert_eq!(r.status, 200);
    let r = raw(s.addr, &format!("GET /version HTTP/1.1\r\nAuthorization: Bearer {token}x"), b"").await;
    r.assert_error(401, "unauthorized: invalid token");
}

#[tokio::test]
async fn token_without_auth_configured_is_401() {
    let s = server(RestApiConfig::default()).await;
    send(s.addr, "POST", "/token").await.assert_error(401, "unauthorized");
}

#[tokio::test]
async fn cors_preflight_skips_auth_and_actual_requests_get_headers() {
    let s = server(with_auth()).await;
    let head = "OPTIONS /pins HTTP/1.1\r\nOrigin: http://ui.example\r\nAccess-Control-Request-Method: GET";
    let r = raw(s.addr, head, b"").await;
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(r.header("access-control-allow-origin"), Some("http://ui.example"));
    assert_eq!(r.header("access-control-allow-methods"), Some("GET"));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    let head = format!("GET /version HTTP/1.1\r\nOrigin: http://ui.example\r\n{}", basic("admin", "s3cret"));
    let r = raw(s.addr, &head, b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some("http://ui.example"));
    assert_eq!(
        r.header("access-control-expose-headers"),
        Some("Content-Type, X-Stream-Output, X-Chunked-Output, X-Content-Length")
    );
}

// ---- endpoints: these call into the Cluster facade ----

#[tokio::test]
async fn id_shape() {
    let s = server(RestApiConfig::default()).await;
    let r = get(s.addr, "/id").await;
    assert_eq!(r.status, 200);
    let id = r.json();
    let expected = set(&[
        "id",
        "addresses",
        "cluster_peers",
        "cluster_peers_addresses",
        "version",
        "commit",
        "rpc_protocol_version",
        "error",
        "ipfs",
        "peername",
    ]);
    assert!(keys(&id).is_superset(&expected), "{id}");
    assert_eq!((id["version"].as_str(), id["peername"].as_str()), (Some("1.1.6"), Some("peer-0")));
    assert_eq!(keys(&id["ipfs"]), set(&["id", "addresses", "error"]));
    // The cluster address: the libp2p host's listen address, ending in the peer's ID.
    let addresses = id["addresses"].as_array().unwrap();
    assert_eq!(addresses.len(), 1, "{id}");
    let address = addresses[0].as_str().unwrap();
    let peer = id["id"].as_str().unwrap();
    assert!(address.starts_with("/ip4/127.0.0.1/tcp/") && address.ends_with(&format!("/p2p/{peer}")), "{address}");
    assert!(!address.contains("/tcp/0/"), "the bound port, not the one asked for: {address}");
}

#[tokio::test]
async fn pin_lifecycle_on_the_wire() {
    let s = server(RestApiConfig::default()).await;
    // Unknown parameters (common clients send extra ones) are ignored.
    let r = send(s.addr, "POST", &format!("/pins/{CID}?name=site&meta-owner=me&stream-channels=false&bogus=1")).await;
    assert_eq!(r.status, 200, "{r:?}");
    let pin = r.json();
    assert_eq!(keys(&pin), set(&PIN_KEYS));
    assert_eq!((pin["cid"].as_str(), pin["name"].as_str()), (Some(CID), Some("site")));
    assert_eq!((pin["type"].as_str(), pin["max_depth"].as_i64()), (Some("pin"), Some(-1)));
    assert_eq!(pin["metadata"], serde_json::json!({"owner": "me"}));

    let r = get(s.addr, &format!("/allocations/{CID}")).await;
    assert_eq!((r.status, keys(&r.json())), (200, set(&PIN_KEYS)));

    let r = get(s.addr, "/allocations").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("trailer"), Some("X-Stream-Error"));
    assert_eq!(r.trailer("x-stream-error"), Some(""), "the trailer is always sent");
    let lines = r.lines();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["cid"], CID);

    let r = get(s.addr, &format!("/pins/{CID}")).await;
    assert_eq!(r.status, 200);
    let gpi = r.json();
    assert_eq!(keys(&gpi), set(&GPI_KEYS));
    let (_, peer) = gpi["peer_map"].as_object().unwrap().iter().next().expect("one peer");
    let peer_keys = set(&["peername", "status", "timestamp", "error", "attempt_count", "priority_pin"]);
    assert!(keys(peer).is_superset(&peer_keys), "{peer}");

    let r = get(s.addr, &format!("/pins?filter=pinned,queued,pinning&cids={CID}")).await;
    assert_eq!((r.status, r.trailer("x-stream-error")), (200, Some("")), "{r:?}");
    assert!(r.lines().iter().all(|l| keys(l) == set(&GPI_KEYS)));
    // CIDs asked for by name come in the order asked; one outside the pinset is `unpinned`.
    let other = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy";
    let lines = get(s.addr, &format!("/pins?cids={other},{CID}")).await.lines();
    assert_eq!(lines.iter().map(|l| l["cid"].as_str().unwrap()).collect::<Vec<_>>(), [other, CID]);
    let statuses = |line: &serde_json::Value| -> Vec<String> {
        line["peer_map"].as_object().unwrap().values().map(|p| p["status"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!((statuses(&lines[0]), lines[0]["created"].as_str()), (vec!["unpinned".to_string()], Some(GO_ZERO_TIME)));

    let r = send(s.addr, "POST", &format!("/pins/{CID}/recover")).await;
    assert_eq!((r.status, keys(&r.json())), (200, set(&GPI_KEYS)));

    let r = send(s.addr, "DELETE", &format!("/pins/{CID}")).await;
    assert_eq!((r.status, r.json()["cid"].as_str()), (200, Some(CID)));
    send(s.addr, "DELETE", &format!("/pins/{CID}")).await.assert_error(404, "");
    get(s.addr, &format!("/allocations/{CID}")).await.assert_error(404, "");
}

#[tokio::test]
async fn empty_streams_are_204() {
    let s = server(RestApiConfig::default()).await;
    // (The reference also declares `Trailer` on a 204; hyper drops it there, as a 204 has no body.)
    for path in ["/allocations", "/pins"] {
        let r = get(s.addr, path).await;
        assert_eq!((r.status, r.body.len(), r.trailers.is_none()), (204, 0, true), "{path}");
    }
    assert_eq!(send(s.addr, "POST", "/pins/recover").await.status, 204);
}

#[tokio::test]
async fn peers_stream_ids() {
    let s = server(RestApiConfig::default()).await;
    let r = get(s.addr, "/peers").await;
    assert_eq!((r.status, r.trailer("x-stream-error")), (200, Some("")));
    let peers = r.lines();
    assert_eq!(peers.len(), 1);
    assert!(keys(&peers[0]).contains("cluster_peers"));
}

#[tokio::test]
async fn add_accepts_what_common_clients_send() {
    let s = server(RestApiConfig::default()).await;
    // Chunked, no Content-Length, quoted boundary, `file` disposition without a name.
    let part = "--qb\r\nContent-Disposition: file; filename=\"hello.txt\"\r\n\r\nhello world\r\n--qb--\r\n";
    let body = format!("{:x}\r\n{part}\r\n0\r\n\r\n", part.len());
    let head = "POST /add?cid-version=1&name=hello&unknown=x HTTP/1.1\r\nContent-Type: multipart/form-data; boundary=\"qb\"\r\nTransfer-Encoding: chunked";
    let r = raw(s.addr, head, body.as_bytes()).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.trailer("x-stream-error"), Some(""));
    let out = r.lines();
    assert_eq!(keys(out.last().unwrap()), set(&["name", "cid", "bytes", "size", "allocations"]));

    let head = format!(
        "POST /add?stream-channels=false HTTP/1.1\r\nContent-Type: multipart/form-data; boundary=qb\r\nContent-Length: {}",
        part.len()
    );
    let r = raw(s.addr, &head, part.as_bytes()).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json().as_array().map(Vec::len), Some(1), "one file, no wrapping: one output object");
}

#[tokio::test]
async fn ours_readiness_and_prometheus_need_no_auth() {
    let s = server(with_auth()).await;
    let r = get(s.addr, "/readyz").await;
    assert!(r.status == 200 || r.status == 503, "{r:?}");
    assert!(keys(&r.json()).is_superset(&set(&["ready", "consensus", "ipfs"])));
    assert_eq!(r.json()["ready"], r.status == 200);
    let r = get(s.addr, "/metrics").await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
}

#[tokio::test]
async fn health_and_monitor_shapes() {
    let s = server(RestApiConfig::default()).await;
    let graph = get(s.addr, "/health/graph").await.json();
    let graph_keys =
        ["cluster_id", "id_to_peername", "ipfs_links", "cluster_links", "cluster_trust_links", "cluster_to_ipfs"];
    assert_eq!(keys(&graph), set(&graph_keys));
    assert!(get(s.addr, "/health/alerts").await.json().is_array());
    assert!(get(s.addr, "/monitor/metrics").await.json().is_array());
    assert!(get(s.addr, "/monitor/metrics/freespace").await.json().is_array());
    let gc = send(s.addr, "POST", "/ipfs/gc?local=true").await;
    assert_eq!((gc.status, keys(&gc.json())), (200, set(&["peer_map"])));
}

#[tokio::test]
async fn the_typed_client_round_trips() {
    let s = server(with_auth()).await;
    let url = format!("http://{}", s.addr);
    let denied = Client::new(&url).unwrap().with_basic_auth("admin", "nope");
    assert!(matches!(denied.version().await, Err(sidecar::Error::Unauthorized(_))));
    let client = Client::new(&url).unwrap().with_basic_auth("admin", "s3cret");
    let token = client.token().await.unwrap();
    let client = Client::new(&url).unwrap().with_bearer_token(&token);
    assert_eq!(client.version().await.unwrap().version, "1.1.6");
    let cid = parse_cid(CID).unwrap();
    let pin = client.pin(&cid, &PinOptions { name: "x".into(), ..Default::default() }).await.unwrap();
    assert_eq!(pin.name, "x");
    let all: Vec<_> = client.status_all(None, &[], false).await.unwrap().try_collect().await.unwrap();
    assert_eq!(all.len(), 1);
    let absent = parse_cid("bafkqaaa").unwrap();
    assert!(matches!(client.allocation(&absent).await, Err(sidecar::Error::NotFound(_))));
    let files = vec![AddFile::bytes("a.txt", "abc")];
    let added: Vec<_> = client.add(files, &[]).await.unwrap().try_collect().await.unwrap();
    assert!(!added.is_empty());
}

/// A CAR v1 of raw blocks, the first of `roots` holding `data`.
async fn car_of(data: &[u8], roots: usize) -> (sidecar::types::Cid, Vec<u8>) {
    let cid = sidecar::ipfs::fake::raw_block_cid(data);
    let header = iroh_car::CarHeader::new_v1(vec![cid; roots]);
    let mut writer = iroh_car::CarWriter::new(header, Vec::new());
    writer.write(cid, data).await.unwrap();
    (cid, writer.finish().await.unwrap())
}

async fn post_car(addr: std::net::SocketAddr, query: &str, car: &[u8]) -> Raw {
    let mut body = b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"data.car\"\r\n\r\n".to_vec();
    body.extend_from_slice(car);
    body.extend_from_slice(b"\r\n--B--\r\n");
    let head = format!(
        "POST /add?{query} HTTP/1.1\r\nContent-Type: multipart/form-data; boundary=B\r\nContent-Length: {}",
        body.len()
    );
    raw(addr, &head, &body).await
}

#[tokio::test]
async fn add_car_imports_the_blocks_and_pins_the_root() {
    let s = server(RestApiConfig::default()).await;
    let (root, car) = car_of(b"content of a CAR", 1).await;
    let r = post_car(s.addr, "format=car&name=imported&replication=-1", &car).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.trailer("x-stream-error"), Some(""));
    let out = r.lines();
    assert_eq!(out.len(), 1, "one output for a CAR, as the reference");
    assert_eq!(keys(&out[0]), set(&["name", "cid", "bytes", "size", "allocations"]));
    assert_eq!(out[0]["cid"], root.to_string().as_str());
    assert_eq!(
        (out[0]["name"].as_str(), out[0]["bytes"].as_u64(), out[0]["size"].as_u64()),
        (Some("data.car"), Some(16), Some(0))
    );
    let pin = get(s.addr, &format!("/allocations/{root}")).await;
    assert_eq!(pin.status, 200, "the root is pinned: {pin:?}");
    assert_eq!(
        (pin.json()["name"].as_str(), pin.json()["replication_factor_min"].as_i64()),
        (Some("imported"), Some(-1))
    );

    let r = post_car(s.addr, "format=car&stream-channels=false", &car).await;
    assert_eq!(r.json().as_array().map(Vec::len), Some(1), "{r:?}");
}

#[tokio::test]
async fn add_car_rejects_what_it_cannot_import() {
    let s = server(RestApiConfig::default()).await;
    let (_, two_roots) = car_of(b"two roots", 2).await;
    post_car(s.addr, "format=car", &two_roots)
        .await
        .assert_error(400, "only CAR files with a single root are supported");
    let (_, no_root) = car_of(b"no root", 0).await;
    post_car(s.addr, "format=car", &no_root).await.assert_error(400, "");
    post_car(s.addr, "format=car", b"not a CAR").await.assert_error(400, "");
    let (_, car) = car_of(b"wrapped", 1).await;
    post_car(s.addr, "format=car&wrap-with-directory=true", &car)
        .await
        .assert_error(400, "cannot wrap a CAR file upload");
    let mut truncated = car.clone();
    truncated.truncate(car.len() - 2);
    post_car(s.addr, "format=car", &truncated).await.assert_error(400, "malformed CAR");
}

#[tokio::test]
async fn bandwidth_is_an_object_of_protocols() {
    let s = server(RestApiConfig::default()).await;
    let r = get(s.addr, "/health/bandwidth").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/json"));
    let by_protocol = r.json();
    let by_protocol = by_protocol.as_object().unwrap_or_else(|| panic!("an object: {r:?}"));
    for stats in by_protocol.values() {
        assert_eq!(keys(stats), set(&["total_in", "total_out", "rate_in", "rate_out"]));
    }
    let client = Client::new(&format!("http://{}", s.addr)).unwrap();
    assert_eq!(client.bandwidth().await.unwrap().len(), by_protocol.len());
}

// ---- the departure handshake (ours, for the operator) ----

async fn put_json(addr: std::net::SocketAddr, path: &str, body: &str) -> Raw {
    let head = format!("PUT {path} HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}", body.len());
    raw(addr, &head, body.as_bytes()).await
}

async fn declare(addr: std::net::SocketAddr, body: &str) -> Raw {
    put_json(addr, "/consensus/departure", body).await
}

#[tokio::test]
async fn a_departure_is_undecided_until_a_restart_is_declared() {
    let s = server(RestApiConfig::default()).await;
    assert_eq!(get(s.addr, "/consensus/departure").await.json(), serde_json::json!({"departure": "undecided"}));
    assert_eq!(get(s.addr, "/consensus").await.json()["departure"], "undecided");

    declare(s.addr, r#"{"departure": "removed"}"#).await.assert_error(400, "only a restart can be declared");
    declare(s.addr, "restart").await.assert_error(400, "error decoding request body");
    get(s.addr, "/consensus/departure?wait=11m").await.assert_error(400, "wait: \"11m\" is not a duration");
    get(s.addr, "/consensus/departure?wait=soon").await.assert_error(400, "wait: \"soon\" is not a duration");

    // A preStop hook waiting meanwhile is answered by the declaration, not by its wait running out.
    let waiting = tokio::spawn(get(s.addr, "/consensus/departure?wait=10m"));
    let declared = declare(s.addr, r#"{"departure": "restart"}"#).await;
    assert_eq!((declared.status, declared.json()), (200, serde_json::json!({"departure": "restart"})));
    let answered = tokio::time::timeout(std::time::Duration::from_secs(60), waiting).await.unwrap().unwrap();
    assert_eq!(answered.json(), serde_json::json!({"departure": "restart"}));
    assert_eq!(get(s.addr, "/consensus").await.json()["departure"], "restart");
}

/// `PUT /consensus/addresses` (ours): the operator tells a peer where members are now. Only
/// members other than the peer itself are connected to; malformed entries are 400.
#[tokio::test]
async fn introducing_members_connects_only_to_other_members() {
    let s = server(RestApiConfig::default()).await;
    let me = get(s.addr, "/id").await.json()["id"].as_str().unwrap().to_string();
    let stranger = libp2p_identity::Keypair::generate_ed25519().public().to_peer_id().to_string();
    let body = format!(
        r#"[{{"peer_id": "{me}", "addresses": ["/ip4/127.0.0.1/tcp/1"]}},
            {{"peer_id": "{stranger}", "addresses": ["/ip4/127.0.0.1/tcp/2"]}}]"#
    );
    let answer = put_json(s.addr, "/consensus/addresses", &body).await;
    assert_eq!((answer.status, answer.json()), (200, serde_json::json!({"connecting": 0})));

    let bad_peer = r#"[{"peer_id": "not-a-peer", "addresses": []}]"#;
    put_json(s.addr, "/consensus/addresses", bad_peer).await.assert_error(400, "invalid peer ID");
    let bad_address = format!(r#"[{{"peer_id": "{stranger}", "addresses": ["/ip4/nowhere"]}}]"#);
    put_json(s.addr, "/consensus/addresses", &bad_address).await.assert_error(400, "invalid address");
    put_json(s.addr, "/consensus/addresses", "{}").await.assert_error(400, "error decoding request body");
}
