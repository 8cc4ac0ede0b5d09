//! REST API authentication end to end: Basic credentials and the JWT of `POST /token`.

use reqwest::Method;

use crate::common::*;

#[tokio::test]
async fn basic_auth_and_bearer_token() {
    let daemon = shared_daemon();
    let mut peer = TestPeer::start(&daemon.api_multiaddr().to_string(), &["--basic-auth", "admin:secret"]).await;

    // Without credentials: 401 with the challenge; liveness needs none.
    let response = peer.http.get(peer.url("/id")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 401);
    // As the reference: a Bearer and a Basic challenge when no credentials came.
    let offered = challenges(&response);
    assert!(offered.iter().any(|c| c == r#"Basic realm="Restricted IPFS Cluster API""#), "{offered:?}");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], 401, "{body}");
    let response = peer.http.get(peer.url("/health")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 204);

    // Wrong password: 401 as well.
    let response = peer.http.get(peer.url("/id")).basic_auth("admin", Some("wrong")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let offered = challenges(&response);
    assert!(offered.iter().any(|c| c.starts_with("Basic realm=")), "{offered:?}");

    // Right credentials: 200.
    peer.credentials = Some(("admin".into(), "secret".into()));
    let (status, id) = peer.call(peer.request(Method::GET, "/id")).await;
    assert_eq!(status, 200, "{id}");
    assert!(id["id"].as_str().is_some_and(|s| s.starts_with("12D3")), "{id}");

    // A token issued for those credentials works as a Bearer, alone.
    let (status, token) = peer.call(peer.request(Method::POST, "/token")).await;
    assert_eq!(status, 200, "{token}");
    let jwt = token["token"].as_str().unwrap_or_else(|| panic!("{token}")).to_string();
    assert_eq!(jwt.split('.').count(), 3, "a JWT: {jwt}");
    let response = peer.http.get(peer.url("/id")).bearer_auth(&jwt).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let cid = add_unpinned(daemon, "pinned with a token").await;
    let response = peer.http.post(peer.url(&format!("/pins/{cid}"))).bearer_auth(&jwt).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    peer.wait_status(&cid, &["pinned"]).await;

    // A tampered token is refused.
    let tampered = format!("{jwt}x");
    let response = peer.http.get(peer.url("/id")).bearer_auth(&tampered).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 401);
    assert!(!challenges(&response).is_empty());

    // The typed client with the same credentials.
    let client = sidecar::client::Client::new(&peer.process.api_multiaddr()).unwrap().with_bearer_token(&jwt);
    assert_eq!(client.id().await.unwrap().id.map(|p| p.to_string()).as_deref(), id["id"].as_str());
    let unauthenticated = sidecar::client::Client::new(&peer.process.api_multiaddr()).unwrap();
    assert!(unauthenticated.id().await.is_err());
    peer.stop().await;
}

fn challenges(response: &reqwest::Response) -> Vec<String> {
    response.headers().get_all("www-authenticate").iter().map(|v| v.to_str().unwrap().to_string()).collect()
}
