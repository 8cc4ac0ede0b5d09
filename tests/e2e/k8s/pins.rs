//! The Pin resource as the API server takes it: what its schema can check is refused there,
//! with a message a person understands, before any controller sees it.

use e2e::k8s::Kube;

use super::namespace;

const CID: &str = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy";

fn pin(namespace: &str, name: &str, spec: &str) -> String {
    format!(
        r#"{{"apiVersion": "ipfscluster.io/v1alpha1", "kind": "Pin",
            "metadata": {{"name": "{name}", "namespace": "{namespace}"}}, "spec": {spec}}}"#
    )
}

#[test]
fn the_api_server_refuses_pins_the_schema_rules_out() {
    let kube = Kube::start().unwrap();
    let kubectl = kube.kubectl();
    let crds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    kubectl.run(&["apply", "--server-side", "-f", crds.to_str().unwrap()]).unwrap();
    kubectl.run(&["wait", "--for=condition=Established", "crd/pins.ipfscluster.io"]).unwrap();
    let namespace = namespace(&kubectl, "pin-schema");

    let valid = format!(
        r#"{{"cid": "{CID}", "replicationMin": 1, "replicationMax": -1, "mode": "direct",
            "expireIn": "24h", "metadata": {{"owner": "team-a"}}, "allocations": ["ipfs-cluster-0"]}}"#
    );
    kubectl.apply(&pin(&namespace, "valid", &valid)).unwrap();
    let table = kubectl.run(&["get", "pins", "-n", &namespace]).unwrap();
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "CID", "PHASE", "PINNED", "AGE"], "{table}");
    assert!(table.contains(CID), "{table}");

    let refused = [
        (r#"{"cid": "not-a-cid"}"#.to_string(), "spec.cid"),
        (format!(r#"{{"cid": "{CID}", "replicationMin": 3, "replicationMax": 2}}"#), "must not exceed replicationMax"),
        (format!(r#"{{"cid": "{CID}", "replicationMin": -1, "replicationMax": 2}}"#), "must not exceed replicationMax"),
        (format!(r#"{{"cid": "{CID}", "replicationMin": -2}}"#), "spec.replicationMin"),
        (format!(r#"{{"cid": "{CID}", "mode": "sideways"}}"#), "spec.mode"),
        (format!(r#"{{"cid": "{CID}", "expireIn": "tomorrow"}}"#), "spec.expireIn"),
        (
            format!(r#"{{"cid": "{CID}", "expireIn": "1h", "expireAt": "2030-01-01T00:00:00Z"}}"#),
            "expireAt or expireIn, not both",
        ),
    ];
    for (n, (spec, reason)) in refused.iter().enumerate() {
        let error = kubectl.apply(&pin(&namespace, &format!("invalid-{n}"), spec)).expect_err(spec).to_string();
        assert!(error.contains(reason), "{spec}: {error}");
    }

    let other = "bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq";
    let moved = kubectl.run(&[
        "patch",
        "pin",
        "valid",
        "-n",
        &namespace,
        "--type=merge",
        "-p",
        &format!(r#"{{"spec":{{"cid":"{other}"}}}}"#),
    ]);
    let error = moved.expect_err("spec.cid is immutable").to_string();
    assert!(error.contains("cid is immutable"), "{error}");
}

/// Each example names content the playground puts into its daemons, so each reaches Pinned there.
#[test]
fn the_examples_name_the_content_the_playground_provides() {
    let provided: Vec<String> = e2e::k8s::examples::CONTENT.iter().map(|data| e2e::common::raw_cid(data)).collect();
    let named = e2e::k8s::examples::cids().unwrap();
    assert_eq!(named.len(), 3, "{named:?}");
    for (file, cid) in named {
        assert!(provided.contains(&cid), "examples/{file} names {cid}, which the playground does not provide");
    }
}
