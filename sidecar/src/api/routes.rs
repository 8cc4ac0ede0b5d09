//! The route table: paths and methods to handlers, each response tagged with its route pattern
//! (for metrics). Authentication, CORS, redirects and limits happen before this, in `service.rs`.

use std::sync::Arc;

use warp::filters::BoxedFilter;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::auth::Auth;
use super::{add, error, info, peers, pins};
use crate::cluster::Cluster;

/// What handlers need; cloned per request.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub cluster: Cluster,
    pub auth: Option<Arc<Auth>>,
    /// `max_add_body_size`: the multipart upload of `POST /add` (`None` = unlimited).
    pub max_add_body_size: Option<u64>,
}

/// The route pattern that answered, in the response extensions.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RouteLabel(pub &'static str);

fn tag(label: &'static str) -> impl Fn(Response) -> Response + Clone {
    move |mut resp: Response| {
        resp.extensions_mut().insert(RouteLabel(label));
        resp
    }
}

fn respond(result: crate::Result<Response>) -> Response {
    result.unwrap_or_else(|err| error::error_from(&err))
}

/// Query pairs in order, repeated keys kept.
#[derive(Clone, Debug, Default)]
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    pub(crate) fn parse(raw: &str) -> Self {
        Query(form_urlencoded::parse(raw.as_bytes()).into_owned().collect())
    }

    pub(crate) fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The first value, as Go's `Values.Get`.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.pairs().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// Every value of a list parameter, accepting both `k=a,b` and `k=a&k=b`.
    pub(crate) fn list(&self, key: &str) -> Vec<&str> {
        self.pairs()
            .filter(|(k, _)| *k == key)
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// `local=true` and the like: only the exact `true` counts, as in the reference's handlers.
    pub(crate) fn is_true(&self, key: &str) -> bool {
        self.get(key) == Some("true")
    }

    /// A boolean parsed like Go's `strconv.ParseBool`; absent or empty gives `default`.
    pub(crate) fn bool_param(&self, key: &str, default: bool) -> crate::Result<bool> {
        match self.get(key).unwrap_or("") {
            "" => Ok(default),
            "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
            "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
            _ => Err(crate::Error::BadRequest(format!("parameter {key} invalid"))),
        }
    }
}

fn query() -> impl Filter<Extract = (Query,), Error = std::convert::Infallible> + Clone {
    warp::query::raw().or(warp::any().map(String::new)).unify().map(|raw: String| Query::parse(&raw))
}

/// `/pins/{ipfs,ipns,ipld}/{path..}` as the IPFS path it names.
fn pin_path() -> impl Filter<Extract = (String,), Error = Rejection> + Clone {
    warp::path("pins").and(warp::path::tail()).and_then(|tail: warp::path::Tail| async move {
        match tail.as_str().split_once('/') {
            Some((kind @ ("ipfs" | "ipns" | "ipld"), rest)) if !rest.is_empty() => Ok(format!("/{kind}/{rest}")),
            _ => Err(warp::reject::not_found()),
        }
    })
}

pub(crate) fn routes(ctx: Ctx) -> BoxedFilter<(Response,)> {
    let ctx = warp::any().map(move || ctx.clone());
    let get = warp::get;
    let post = warp::post;

    let info = warp::path!("id")
        .and(get())
        .and(ctx.clone())
        .then(info::id)
        .map(tag("/id"))
        .or(warp::path!("version").and(get()).then(info::version).map(tag("/version")))
        .unify()
        .or(warp::path!("peers").and(get()).and(ctx.clone()).then(peers::list).map(tag("/peers")))
        .unify()
        .or(warp::path!("peers")
            .and(post())
            .and(warp::body::bytes())
            .and(ctx.clone())
            .then(peers::add)
            .map(respond)
            .map(tag("/peers")))
        .unify()
        .or(warp::path!("peers" / String)
            .and(warp::delete())
            .and(query())
            .and(ctx.clone())
            .then(peers::remove)
            .map(respond)
            .map(tag("/peers/{peer}")))
        .unify()
        .or(warp::path!("consensus").and(get()).and(ctx.clone()).then(peers::status).map(tag("/consensus")))
        .unify()
        .or(warp::path!("consensus" / "departure")
            .and(get())
            .and(query())
            .and(ctx.clone())
            .then(peers::departure)
            .map(respond)
            .map(tag("/consensus/departure")))
        .unify()
        .or(warp::path!("consensus" / "departure")
            .and(warp::put())
            .and(warp::body::bytes())
            .and(ctx.clone())
            .then(peers::declare_departure)
            .map(respond)
            .map(tag("/consensus/departure")))
        .unify()
        .or(warp::path!("consensus" / "addresses")
            .and(warp::put())
            .and(warp::body::bytes())
            .and(ctx.clone())
            .then(peers::introduce)
            .map(respond)
            .map(tag("/consensus/addresses")))
        .unify()
        .or(warp::path!("consensus" / "vouch")
            .and(warp::put())
            .and(warp::body::bytes())
            .and(ctx.clone())
            .then(peers::vouch)
            .map(respond)
            .map(tag("/consensus/vouch")))
        .unify()
        .or(warp::path!("consensus" / "init")
            .and(post())
            .and(ctx.clone())
            .then(peers::init)
            .map(respond)
            .map(tag("/consensus/init")))
        .unify()
        .or(warp::path!("token")
            .and(post())
            .and(warp::ext::optional())
            .and(ctx.clone())
            .then(info::token)
            .map(tag("/token")))
        .unify()
        .or(warp::path!("ipfs" / "gc")
            .and(post())
            .and(query())
            .and(ctx.clone())
            .then(info::ipfs_gc)
            .map(tag("/ipfs/gc")))
        .unify()
        .boxed();

    let health = warp::path!("health")
        .and(get())
        .map(error::no_content)
        .map(tag("/health"))
        .or(warp::path!("health" / "graph").and(get()).and(ctx.clone()).then(info::graph).map(tag("/health/graph")))
        .unify()
        .or(warp::path!("health" / "alerts").and(get()).and(ctx.clone()).then(info::alerts).map(tag("/health/alerts")))
        .unify()
        .or(warp::path!("health" / "bandwidth")
            .and(get())
            .and(ctx.clone())
            .then(info::bandwidth)
            .map(tag("/health/bandwidth")))
        .unify()
        .or(warp::path!("monitor" / "metrics")
            .and(get())
            .and(ctx.clone())
            .then(info::metric_names)
            .map(tag("/monitor/metrics")))
        .unify()
        .or(warp::path!("monitor" / "metrics" / String)
            .and(get())
            .and(ctx.clone())
            .then(info::metrics)
            .map(tag("/monitor/metrics/{name}")))
        .unify()
        .or(warp::path!("readyz").and(get()).and(ctx.clone()).then(info::readyz).map(tag("/readyz")))
        .unify()
        .or(warp::path!("metrics").and(get()).and(ctx.clone()).then(info::prometheus).map(tag("/metrics")))
        .unify()
        .boxed();

    let allocations = warp::path!("allocations")
        .and(get())
        .and(query())
        .and(ctx.clone())
        .then(pins::allocations)
        .map(tag("/allocations"))
        .or(warp::path!("allocations" / String)
            .and(get())
            .and(ctx.clone())
            .then(pins::allocation)
            .map(respond)
            .map(tag("/allocations/{cid}")))
        .unify()
        .boxed();

    // Fixed paths and `/pins/{ipfs,ipns,ipld}/...` come before `/pins/{cid}`, which would take them.
    let pins = warp::path!("pins")
        .and(get())
        .and(query())
        .and(ctx.clone())
        .then(pins::status_all)
        .map(respond)
        .map(tag("/pins"))
        .or(warp::path!("pins" / "recover")
            .and(post())
            .and(query())
            .and(ctx.clone())
            .then(pins::recover_all)
            .map(tag("/pins/recover")))
        .unify()
        .or(pin_path()
            .and(post())
            .and(query())
            .and(ctx.clone())
            .then(pins::pin_path)
            .map(respond)
            .map(tag("/pins/{keyType}/{path}")))
        .unify()
        .or(pin_path()
            .and(warp::delete())
            .and(ctx.clone())
            .then(pins::unpin_path)
            .map(respond)
            .map(tag("/pins/{keyType}/{path}")))
        .unify()
        .or(warp::path!("pins" / String / "recover")
            .and(post())
            .and(query())
            .and(ctx.clone())
            .then(pins::recover)
            .map(respond)
            .map(tag("/pins/{cid}/recover")))
        .unify()
        .or(warp::path!("pins" / String)
            .and(get())
            .and(query())
            .and(ctx.clone())
            .then(pins::status)
            .map(respond)
            .map(tag("/pins/{cid}")))
        .unify()
        .or(warp::path!("pins" / String)
            .and(post())
            .and(query())
            .and(ctx.clone())
            .then(pins::pin)
            .map(respond)
            .map(tag("/pins/{cid}")))
        .unify()
        .or(warp::path!("pins" / String)
            .and(warp::delete())
            .and(ctx.clone())
            .then(pins::unpin)
            .map(respond)
            .map(tag("/pins/{cid}")))
        .unify()
        .boxed();

    let add = warp::path!("add")
        .and(post())
        .and(query())
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .and(ctx)
        .then(add::handle)
        .map(tag("/add"))
        .boxed();

    info.or(health)
        .unify()
        .or(allocations)
        .unify()
        .or(pins)
        .unify()
        .or(add)
        .unify()
        .recover(error::recover)
        .unify()
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_forms() {
        let q = Query::parse("filter=pinned,error&filter=queued&cids=a%2Cb&local=true&local=false&x=1");
        assert_eq!(q.list("filter"), vec!["pinned", "error", "queued"]);
        assert_eq!(q.list("cids"), vec!["a", "b"]);
        assert_eq!(q.list("missing"), Vec::<&str>::new());
        assert!(q.is_true("local"), "the first value counts, as with Go's Get");
        assert!(!Query::parse("local=1").is_true("local"));
        assert_eq!(Query::parse("").pairs().count(), 0);
    }

    #[test]
    fn go_booleans() {
        let q = Query::parse("a=T&b=0&c=yes&d=");
        assert!(q.bool_param("a", false).unwrap());
        assert!(!q.bool_param("b", true).unwrap());
        assert_eq!(q.bool_param("c", false).unwrap_err().to_string(), "parameter c invalid");
        assert!(q.bool_param("d", true).unwrap());
        assert!(q.bool_param("absent", true).unwrap());
    }
}
