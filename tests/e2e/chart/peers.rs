//! The peers: their StatefulSet (Kubo and the sidecar in each pod), Services, PodDisruptionBudget and
//! NetworkPolicy.

use std::collections::{BTreeMap, BTreeSet};

use clap::CommandFactory;
use k8s_openapi::api::core::v1::{EnvVar, PodSpec, Probe, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::Role;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use multiaddr::Multiaddr;
use serde_json::{json, Value};

use crate::render::{container, Rendered, Values, FULLNAME};
use crate::{assert_unprivileged, other_values};

fn pod_spec(values: Values) -> PodSpec {
    Rendered::of(values).peers().spec.unwrap().template.spec.unwrap()
}

#[test]
fn the_statefulset_follows_the_values() {
    for (values, replicas, policy) in [(Values::Default, 3, "OrderedReady"), (Values::Other, 7, "Parallel")] {
        let spec = Rendered::of(values).peers().spec.unwrap();
        assert_eq!(spec.replicas, Some(replicas), "{values:?}");
        assert_eq!(spec.pod_management_policy.as_deref(), Some(policy), "{values:?}");
        assert_eq!(spec.service_name.as_deref(), Some(format!("{FULLNAME}-peers").as_str()));
    }
}

/// A scaled-away peer has left consensus, so its volumes go; `helm uninstall` keeps them.
#[test]
fn volumes_are_deleted_on_scale_down_and_kept_on_uninstall() {
    for (values, class, sizes) in
        [(Values::Default, None, ["10Gi", "1Gi"]), (Values::Other, Some("fast-ssd"), ["100Gi", "2Gi"])]
    {
        let spec = Rendered::of(values).peers().spec.unwrap();
        let retention = spec.persistent_volume_claim_retention_policy.unwrap();
        assert_eq!(retention.when_scaled.as_deref(), Some("Delete"));
        assert_eq!(retention.when_deleted.as_deref(), Some("Retain"));

        let claims: Vec<_> = spec
            .volume_claim_templates
            .unwrap()
            .into_iter()
            .map(|claim| {
                let spec = claim.spec.unwrap();
                let size = spec.resources.unwrap().requests.unwrap()["storage"].0.clone();
                (claim.metadata.name.unwrap(), size, spec.storage_class_name)
            })
            .collect();
        let expected = [("ipfs-repo", sizes[0]), ("cluster-data", sizes[1])]
            .map(|(name, size)| (name.to_string(), size.to_string(), class.map(str::to_string)));
        assert_eq!(claims, expected, "{values:?}");

        let pod = spec.template.spec.unwrap();
        let mounts = |name| {
            let mounts = container(&pod.containers, name).volume_mounts.clone().unwrap();
            mounts.into_iter().map(|m| (m.name, m.mount_path)).collect::<Vec<_>>()
        };
        assert!(mounts("ipfs").contains(&("ipfs-repo".into(), "/data/ipfs".into())));
        assert_eq!(mounts("cluster"), [("cluster-data".to_string(), "/data".to_string())]);
    }
}

/// The sidecar's preStop waits for the operator's verdict (removed, or only restarting), and gives
/// up 10 s before the grace period ends, so the sidecar still stops cleanly.
#[test]
fn the_prestop_hook_awaits_the_departure_within_the_grace_period() {
    for (values, grace) in [(Values::Default, 60), (Values::Other, 90)] {
        let pod = pod_spec(values);
        assert_eq!(pod.termination_grace_period_seconds, Some(grace), "{values:?}");
        let pre_stop = container(&pod.containers, "cluster").lifecycle.clone().unwrap().pre_stop.unwrap();
        let command = pre_stop.exec.unwrap().command.unwrap();
        let timeout = format!("{}s", grace - 10);
        assert_eq!(command, ["cluster-ctl", "peers", "await-departure", "--wait-timeout", &timeout], "{values:?}");
    }
}

#[test]
fn probes_check_the_daemon_and_the_sidecar() {
    let pod = pod_spec(Values::Default);
    let http = |probe: Option<Probe>| {
        let probe = probe.unwrap();
        let get = probe.http_get.clone().unwrap();
        (get.path.unwrap(), get.port, probe)
    };
    let cluster = container(&pod.containers, "cluster");
    let (path, port, _) = http(cluster.readiness_probe.clone());
    assert_eq!((path.as_str(), port), ("/readyz", IntOrString::Int(9094)));
    let (path, port, liveness) = http(cluster.liveness_probe.clone());
    assert_eq!((path.as_str(), port), ("/health", IntOrString::Int(9094)));
    let patience = liveness.failure_threshold.unwrap() * liveness.period_seconds.unwrap();
    assert!(patience >= 60, "a busy peer is restarted after {patience} s");

    let ipfs = container(&pod.containers, "ipfs");
    for probe in [&ipfs.readiness_probe, &ipfs.liveness_probe] {
        let tcp = probe.clone().unwrap().tcp_socket.unwrap();
        assert_eq!(tcp.port, IntOrString::Int(5001));
    }
}

/// Every variable the sidecar container gets is one the daemon or cluster-ctl reads (their clap
/// definitions say which), with the value the operator and the harness expect.
#[test]
fn the_sidecar_gets_the_environment_it_reads() {
    let read: BTreeSet<String> = sidecar::config::DaemonArgs::command()
        .get_arguments()
        .chain(sidecar::cli::Cli::command().get_arguments())
        .filter_map(|arg| Some(arg.get_env()?.to_string_lossy().into_owned()))
        .collect();
    for (values, voters, pin_timeout, pin_deadline) in
        [(Values::Default, "5", "2m", "1h"), (Values::Other, "3", "5m", "6h30m")]
    {
        let pod = pod_spec(values);
        let env = container(&pod.containers, "cluster").env.clone().unwrap();
        assert_eq!(env[0].name, "POD_IP", "POD_IP comes first: the variables after it expand $(POD_IP)");
        for var in &env[1..] {
            assert!(read.contains(&var.name), "{} is read by neither cluster-sidecar nor cluster-ctl", var.name);
        }

        let credentials = values.credentials_secret();
        let cluster_secret = format!("{FULLNAME}-secret");
        let expected = BTreeMap::from([
            ("POD_IP", json!({"field": "status.podIP"})),
            ("CLUSTER_PEERNAME", json!({"field": "metadata.name"})),
            ("CLUSTER_SECRET", json!({"secret": cluster_secret, "key": "secret"})),
            ("CLUSTER_RESTAPI_BASICAUTHCREDENTIALS", json!({"secret": credentials, "key": "credentials"})),
            ("CLUSTER_CREDENTIALS", json!({"secret": credentials, "key": "credentials"})),
            ("CLUSTER_NO_INIT", json!("true")),
            ("CLUSTER_LISTENMULTIADDRESS", json!("/ip4/$(POD_IP)/tcp/9096")),
            ("CLUSTER_RESTAPI_HTTPLISTENMULTIADDRESS", json!("/ip4/$(POD_IP)/tcp/9094")),
            ("CLUSTER_HOST", json!("/ip4/$(POD_IP)/tcp/9094")),
            ("CLUSTER_IPFSHTTP_NODEMULTIADDRESS", json!("/ip4/$(POD_IP)/tcp/5001")),
            ("CLUSTER_IPFSHTTP_PINTIMEOUT", json!(pin_timeout)),
            ("CLUSTER_IPFSHTTP_PINDEADLINE", json!(pin_deadline)),
            ("CLUSTER_DATA_DIR", json!("/data")),
            ("CLUSTER_RAFT_MAXVOTERS", json!(voters)),
            ("CLUSTER_LOG_FORMAT", json!("json")),
        ]);
        let actual: BTreeMap<&str, Value> = env.iter().map(|var| (var.name.as_str(), source(var))).collect();
        assert_eq!(actual, expected, "{values:?}");

        for var in env.iter().filter(|var| var.name.ends_with("MULTIADDRESS") || var.name == "CLUSTER_HOST") {
            let address = var.value.as_deref().unwrap().replace("$(POD_IP)", "127.0.0.5");
            address.parse::<Multiaddr>().unwrap_or_else(|e| panic!("{}: {address}: {e}", var.name));
        }
        for var in env.iter().filter(|var| var.name.starts_with("CLUSTER_IPFSHTTP_PIN")) {
            let text = var.value.as_deref().unwrap();
            let duration = sidecar::types::parse_std_duration(text);
            assert!(duration.is_some_and(|d| !d.is_zero()), "{}: {text} is no positive duration", var.name);
        }
    }
}

/// Where a variable's value comes from, in a form a table can spell.
fn source(var: &EnvVar) -> Value {
    if let Some(value) = &var.value {
        return json!(value);
    }
    let from = var.value_from.clone().unwrap_or_else(|| panic!("{} has no value", var.name));
    match (from.field_ref, from.secret_key_ref) {
        (Some(field), None) => json!({"field": field.field_path}),
        (None, Some(secret)) => json!({"secret": secret.name, "key": secret.key}),
        _ => panic!("{}: unexpected source", var.name),
    }
}

/// The operator finds a cluster by its StatefulSet's label and reads the REST API credentials from
/// the Secret its annotation names, which its Role lets it read.
#[test]
fn the_operator_finds_the_cluster_and_its_credentials() {
    for values in Values::BOTH {
        let rendered = Rendered::of(values);
        let peers = rendered.peers();
        let label = |labels: Option<BTreeMap<String, String>>| labels.unwrap()["ipfscluster.io/cluster"].clone();
        assert_eq!(label(peers.metadata.labels.clone()), FULLNAME);
        assert_eq!(label(peers.spec.clone().unwrap().template.metadata.unwrap().labels), FULLNAME);
        let annotations = peers.metadata.annotations.unwrap();
        let credentials = values.credentials_secret();
        assert_eq!(annotations["ipfscluster.io/api-credentials"], credentials, "{values:?}");

        let role: Role = rendered.get(&format!("{FULLNAME}-operator"));
        let secrets = role.rules.unwrap().into_iter().find(|r| r.resources == Some(vec!["secrets".to_string()]));
        assert_eq!(secrets.unwrap().resource_names, Some(vec![credentials]), "{values:?}");
    }
}

/// The headless Service lists peers before they are ready (they are reached to join); the REST API
/// Service, the PodDisruptionBudget and the NetworkPolicy select the same pods.
#[test]
fn services_and_the_disruption_budget_select_the_peers() {
    let rendered = Rendered::of(Values::Default);
    let spec = rendered.peers().spec.unwrap();
    let selector = spec.selector.match_labels.clone().unwrap();
    let pod_labels = spec.template.metadata.unwrap().labels.unwrap();
    assert!(selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)), "{selector:?} does not select {pod_labels:?}");
    let pod = spec.template.spec.unwrap();
    let container_ports: BTreeMap<String, i32> = pod
        .containers
        .iter()
        .flat_map(|c| c.ports.clone().unwrap())
        .map(|p| (p.name.unwrap(), p.container_port))
        .collect();

    let ports = |service: &Service| -> Vec<(i32, i32)> {
        let spec = service.spec.clone().unwrap();
        assert_eq!(spec.selector.as_ref(), Some(&selector), "{:?}", service.metadata.name);
        let target = |port: Option<IntOrString>| match port.unwrap() {
            IntOrString::String(name) => container_ports[&name],
            IntOrString::Int(number) => number,
        };
        spec.ports.unwrap().into_iter().map(|p| (p.port, target(p.target_port))).collect()
    };
    let headless: Service = rendered.get(&format!("{FULLNAME}-peers"));
    let headless_spec = headless.spec.clone().unwrap();
    assert_eq!(headless_spec.cluster_ip.as_deref(), Some("None"));
    assert_eq!(headless_spec.publish_not_ready_addresses, Some(true));
    assert_eq!(ports(&headless), [(9096, 9096), (4001, 4001)]);
    let api: Service = rendered.get(FULLNAME);
    assert_eq!(ports(&api), [(9094, 9094)]);

    let budget = rendered.get::<PodDisruptionBudget>(FULLNAME).spec.unwrap();
    assert_eq!(budget.max_unavailable, Some(IntOrString::Int(1)));
    assert_eq!(budget.selector.unwrap().match_labels, Some(selector));
}

/// Kubo's RPC API (which can unpin and delete anything) and the cluster port admit only this cluster's
/// peers; the REST API admits the namespace; the IPFS swarm, anyone.
#[test]
fn the_network_policy_guards_the_ipfs_api() {
    let rendered = Rendered::of(Values::Default);
    let selector = rendered.peers().spec.unwrap().selector.match_labels;
    let policy = rendered.get::<NetworkPolicy>(FULLNAME).spec.unwrap();
    assert_eq!(policy.pod_selector.unwrap().match_labels, selector);
    assert_eq!(policy.policy_types, Some(vec!["Ingress".to_string()]));
    let rules: BTreeMap<i32, Value> = policy
        .ingress
        .unwrap()
        .into_iter()
        .flat_map(|rule| {
            let from = serde_json::to_value(&rule.from).unwrap();
            rule.ports.unwrap().into_iter().map(move |p| match p.port {
                Some(IntOrString::Int(port)) => (port, from.clone()),
                other => panic!("a port by number: {other:?}"),
            })
        })
        .collect();
    let this_cluster = json!([{"podSelector": {"matchLabels": {"ipfscluster.io/cluster": FULLNAME}}}]);
    let expected = BTreeMap::from([
        (5001, this_cluster.clone()),
        (9096, this_cluster),
        (9094, json!([{"podSelector": {}}])),
        (4001, Value::Null),
    ]);
    assert_eq!(rules, expected);
}

#[test]
fn peers_run_unprivileged() {
    for values in Values::BOTH {
        let pod = pod_spec(values);
        assert_eq!(pod.automount_service_account_token, Some(false), "the peers do not call the API");
        assert_eq!(pod.enable_service_links, Some(false), "service variables would collide with CLUSTER_*");
        // Kubo's image user, and the Dockerfile's; Kubo's root filesystem is not known to work read-only.
        assert_unprivileged(&pod, "ipfs", 1000, None);
        assert_unprivileged(&pod, "cluster", 10001, Some(true));
    }
}

/// Images, resources, scheduling and pod annotations come from the values as given.
#[test]
fn the_values_reach_the_peer_pods() {
    let given = &other_values()["peers"];
    let template = Rendered::of(Values::Other).peers().spec.unwrap().template;
    let pod = template.spec.unwrap();
    for (name, key) in [("cluster", "sidecar"), ("ipfs", "ipfs")] {
        let container = container(&pod.containers, name);
        let image = &given[key]["image"];
        assert_eq!(
            json!(container.image),
            json!(format!("{}:{}", image["repository"].as_str().unwrap(), image["tag"].as_str().unwrap()))
        );
        assert_eq!(json!(container.image_pull_policy), image["pullPolicy"]);
        assert_eq!(serde_json::to_value(&container.resources).unwrap(), given[key]["resources"], "{name}");
    }
    assert_eq!(serde_json::to_value(&pod.node_selector).unwrap(), given["nodeSelector"]);
    assert_eq!(serde_json::to_value(&pod.tolerations).unwrap(), given["tolerations"]);
    assert_eq!(serde_json::to_value(&pod.affinity).unwrap(), given["affinity"]);
    assert_eq!(serde_json::to_value(template.metadata.unwrap().annotations).unwrap(), given["podAnnotations"]);
}
