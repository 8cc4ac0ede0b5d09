//! The operator: its Deployment and its least-privilege RBAC.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::json;

use crate::render::{container, Rendered, Values, FULLNAME, NAMESPACE};
use crate::{assert_unprivileged, other_values};

fn operator_name() -> String {
    format!("{FULLNAME}-operator")
}

fn pod_spec(values: Values) -> PodSpec {
    Rendered::of(values).operator().spec.unwrap().template.spec.unwrap()
}

/// Two replicas, one active by the Lease; the arguments the operator binary takes.
#[test]
fn the_operator_runs_two_replicas_that_elect_a_leader() {
    let deployment = Rendered::of(Values::Default).operator();
    assert_eq!(deployment.spec.clone().unwrap().replicas, Some(2));
    let pod = pod_spec(Values::Default);
    assert_eq!(pod.service_account_name, Some(operator_name()));
    assert_eq!(pod.termination_grace_period_seconds, Some(30));
    let operator = container(&pod.containers, "operator");
    assert_eq!(operator.command, Some(vec!["cluster-operator".to_string()]));
    let lease = operator_name();
    let args = ["--namespace", NAMESPACE, "--lease-name", &lease, "--metrics-address", "$(POD_IP):8080"];
    assert_eq!(operator.args.clone().unwrap(), args);
    let env = serde_json::to_value(&operator.env).unwrap();
    assert_eq!(
        env,
        json!([
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        ])
    );

    let port = |probe: &Option<k8s_openapi::api::core::v1::Probe>| {
        let get = probe.clone().unwrap().http_get.unwrap();
        (get.path.unwrap(), get.port)
    };
    assert_eq!(port(&operator.liveness_probe), ("/livez".to_string(), IntOrString::Int(8080)));
    assert_eq!(port(&operator.readiness_probe), ("/readyz".to_string(), IntOrString::Int(8080)));
    let ports: Vec<i32> = operator.ports.clone().unwrap().iter().map(|p| p.container_port).collect();
    assert_eq!(ports, [8080]);
}

/// Exactly these permissions, in the release's namespace: a verb more is a privilege too many, a
/// verb less fails the operator (the end-to-end tests run it under this Role).
#[test]
fn the_operator_has_exactly_the_permissions_it_needs() {
    for values in Values::BOTH {
        let credentials = values.credentials_secret();
        let lease = operator_name();
        let expected: BTreeSet<(&str, &str, Option<&str>, &str)> = [
            ("apps", "statefulsets", None, "get list watch"),
            ("", "pods", None, "get list watch"),
            ("", "persistentvolumeclaims", None, "get list watch"),
            ("ipfscluster.io", "clusterpeers", None, "create delete get list patch update watch"),
            ("ipfscluster.io", "clusterpeers/status", None, "patch update"),
            ("ipfscluster.io", "clusterpeers/finalizers", None, "update"),
            ("ipfscluster.io", "pins", None, "get list patch update watch"),
            ("ipfscluster.io", "pins/status", None, "patch update"),
            ("ipfscluster.io", "pins/finalizers", None, "update"),
            ("events.k8s.io", "events", None, "create patch"),
            ("coordination.k8s.io", "leases", Some(lease.as_str()), "get patch update"),
            ("", "secrets", Some(credentials.as_str()), "get"),
        ]
        .into();

        let rendered = Rendered::of(values);
        let role: Role = rendered.get(&operator_name());
        let mut granted = BTreeSet::new();
        for rule in role.rules.unwrap() {
            let names = rule.resource_names.unwrap_or_default();
            assert!(names.len() <= 1, "one name per rule keeps the table simple: {names:?}");
            let mut verbs = rule.verbs.clone();
            verbs.sort();
            for group in rule.api_groups.unwrap() {
                for resource in rule.resources.clone().unwrap() {
                    granted.insert((group.clone(), resource, names.first().cloned(), verbs.join(" ")));
                }
            }
        }
        let granted: BTreeSet<_> =
            granted.iter().map(|(g, r, n, v)| (g.as_str(), r.as_str(), n.as_deref(), v.as_str())).collect();
        assert_eq!(granted, expected, "{values:?}");

        let binding: RoleBinding = rendered.get(&operator_name());
        assert_eq!((binding.role_ref.kind.as_str(), binding.role_ref.name), ("Role", operator_name()));
        let subjects = serde_json::to_value(binding.subjects).unwrap();
        let account = json!([{"kind": "ServiceAccount", "name": operator_name(), "namespace": NAMESPACE}]);
        assert_eq!(subjects, account);
    }
}

#[test]
fn the_operator_runs_unprivileged() {
    assert_unprivileged(&pod_spec(Values::Default), "operator", 10001, Some(true));
}

#[test]
fn the_values_reach_the_operator_pods() {
    let given = &other_values()["operator"];
    assert_eq!(Rendered::of(Values::Other).operator().spec.unwrap().replicas, Some(3));
    let pod = pod_spec(Values::Other);
    let operator = container(&pod.containers, "operator");
    assert_eq!(serde_json::to_value(&operator.resources).unwrap(), given["resources"]);
    assert_eq!(serde_json::to_value(&pod.node_selector).unwrap(), given["nodeSelector"]);
}
