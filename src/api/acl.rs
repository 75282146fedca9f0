//! Access rules: `GET /api/acl` (the rules as loaded), `POST /api/acl/test` (what
//! the rules decide for a request, without making it) and `POST /api/acl/reload`.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{AclNotReloaded, ApiError, BadRequest};
use super::ApiState;
use crate::access::acl::{By, Query, Reloaded};
use crate::access::{Policy, Verdict};
use crate::config::{AclCommand, Action, Rule};
use crate::protocol::TargetAddr;

/// Bound on the name lookup of a test request.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The rules in force.
#[derive(Serialize, ToSchema)]
pub struct AclView {
    #[schema(value_type = String, example = "allow")]
    default_policy: Action,
    /// Whether the destination guard is on (after its default was applied).
    block_private_destinations: bool,
    /// Whether that came from the configuration (false: from the listener's
    /// default: on unless the SOCKS listener is loopback-only).
    block_private_destinations_configured: bool,
    /// `acl.file`, when the rules include one.
    file: Option<String>,
    #[serde(serialize_with = "crate::session::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    loaded_at: SystemTime,
    groups: Vec<GroupView>,
    rules: Vec<RuleView>,
}

#[derive(Serialize, ToSchema)]
pub struct GroupView {
    name: String,
    members: Vec<String>,
}

/// One rule as loaded; absent keys match everything.
#[derive(Serialize, ToSchema)]
pub struct RuleView {
    /// Position in the rule set (main file first, then `acl.file`).
    index: usize,
    /// Where it is written: `acl.rules[2]`, or `FILE: acl.rules[2]`.
    origin: String,
    #[schema(value_type = String, example = "block")]
    action: Action,
    users: Option<Vec<String>>,
    groups: Option<Vec<String>>,
    clients: Option<Vec<String>>,
    destinations: Option<Vec<String>>,
    ports: Option<Vec<String>>,
    commands: Option<Vec<String>>,
    description: String,
}

fn strings<T: ToString>(v: &Option<Vec<T>>) -> Option<Vec<String>> {
    v.as_ref().map(|v| v.iter().map(T::to_string).collect())
}

impl RuleView {
    fn new(index: usize, r: &Rule) -> Self {
        Self {
            index,
            origin: r.origin.clone(),
            action: r.action,
            users: r.users.clone(),
            groups: r.groups.clone(),
            clients: strings(&r.clients),
            destinations: strings(&r.destinations),
            ports: strings(&r.ports),
            commands: r
                .commands
                .as_ref()
                .map(|c| c.iter().map(|c| c.as_str().to_owned()).collect()),
            description: r.description.clone(),
        }
    }
}

/// The access rules in force
///
/// As loaded: groups, rules in order with where each is written, the default policy,
/// the destination guard, the rules file and when they were loaded.
#[utoipa::path(get, path = "/api/acl", responses(
    (status = 200, description = "The rules in force.", body = AclView),
))]
pub async fn rules(State(state): State<ApiState>) -> Json<AclView> {
    let policy = state.inner.deps.acl.access.policy();
    let acl = &policy.acl;
    let mut groups: Vec<GroupView> = acl
        .groups
        .iter()
        .map(|(name, members)| GroupView {
            name: name.clone(),
            members: members.clone(),
        })
        .collect();
    groups.sort_by(|a, b| a.name.cmp(&b.name));
    Json(AclView {
        default_policy: acl.default_policy,
        block_private_destinations: policy.guard,
        block_private_destinations_configured: acl.block_private_destinations.is_some(),
        file: acl.file.as_ref().map(|f| f.display().to_string()),
        loaded_at: policy.loaded_at,
        groups,
        rules: acl
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| RuleView::new(i, r))
            .collect(),
    })
}

/// A request to judge.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestRequest {
    /// The authenticated user; absent or empty without authentication.
    #[serde(default)]
    user: Option<String>,
    /// The client's address.
    #[schema(example = "10.1.2.3")]
    client: String,
    /// A host name or an IP address.
    destination: String,
    port: u16,
    /// connect | bind | udp.
    #[schema(example = "connect")]
    command: String,
}

/// What the rules decide.
#[derive(Serialize, ToSchema)]
pub struct TestResult {
    #[schema(value_type = String, example = "block")]
    decision: Action,
    /// rule | default | private_destination | own_address.
    by: &'static str,
    /// The rule that decided, when one did.
    rule: Option<RuleView>,
    /// The decision in words, as a session record gives it.
    reason: String,
    /// The addresses the destination stands for (a name is resolved now).
    addresses: Vec<String>,
    /// Whether `addresses` were judged: only when the rules need a name's
    /// addresses (the guard is on, or a rule names an address block), as for a
    /// real request; otherwise a name is judged by name.
    addresses_judged: bool,
    /// Why a name could not be resolved (it was then judged by name alone; a
    /// request would fail with "host unreachable").
    resolve_error: Option<String>,
}

/// What the rules would decide for a request
///
/// Judges a request as the proxy would (user, client, destination, port,
/// command), without connecting: the decision, the rule that made it and every
/// address a name resolves to. Not counted in the metrics.
#[utoipa::path(post, path = "/api/acl/test", request_body = TestRequest, responses(
    (status = 200, description = "The decision.", body = TestResult),
    (status = 400, response = BadRequest),
))]
pub async fn test(
    State(state): State<ApiState>,
    body: Bytes,
) -> Result<Json<TestResult>, ApiError> {
    let req: TestRequest =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadBody(e.to_string()))?;
    let command: AclCommand = req.command.parse().map_err(|()| {
        ApiError::BadBody(format!(
            "command {:?}: expected one of {}",
            req.command,
            AclCommand::NAMES
        ))
    })?;
    let client: IpAddr = req.client.parse().map_err(|_| {
        ApiError::BadBody(format!("client {:?}: expected an IP address", req.client))
    })?;
    if req.port == 0 {
        return Err(ApiError::BadBody("port 0: expected 1 to 65535".into()));
    }
    if req.destination.is_empty() || req.destination.len() > 255 {
        return Err(ApiError::BadBody(
            "destination: expected a host name or IP address of 1 to 255 bytes".into(),
        ));
    }
    let dest = match req.destination.parse::<IpAddr>() {
        Ok(ip) => TargetAddr::Ip(SocketAddr::new(ip, req.port)),
        Err(_) => TargetAddr::Domain(req.destination.clone(), req.port),
    };
    let (addrs, resolve_error) = match &dest {
        TargetAddr::Ip(a) => (vec![*a], None),
        TargetAddr::Domain(..) => {
            match tokio::time::timeout(
                RESOLVE_TIMEOUT,
                state.inner.deps.acl.resolver.resolve(&dest),
            )
            .await
            {
                // A datagram goes to the first address only, and only it is judged.
                Ok(Ok(mut addrs)) if command == AclCommand::Udp => {
                    addrs.truncate(1);
                    (addrs, None)
                }
                Ok(Ok(addrs)) => (addrs, None),
                Ok(Err(e)) => (Vec::new(), Some(e.to_string())),
                Err(_) => (
                    Vec::new(),
                    Some(format!("no answer within {RESOLVE_TIMEOUT:?}")),
                ),
            }
        }
    };
    let access = &state.inner.deps.acl.access;
    let user = req.user.as_deref().unwrap_or("");
    let groups = access.groups_of(user).await;
    let policy = access.policy();
    let q = Query {
        user,
        groups: &groups,
        client,
        command,
        port: req.port,
    };
    let judged = matches!(dest, TargetAddr::Ip(_)) || policy.needs_addresses();
    let verdict = policy.judge(access.own(), &q, &dest, if judged { &addrs } else { &[] });
    Ok(Json(TestResult {
        addresses_judged: judged,
        ..result(&policy, &verdict, &addrs, resolve_error)
    }))
}

fn result(
    policy: &Policy,
    verdict: &Verdict,
    addrs: &[SocketAddr],
    resolve_error: Option<String>,
) -> TestResult {
    let (decision, by, rule) = match verdict {
        Verdict::Allowed(by) | Verdict::Blocked(by) => {
            let decision = match verdict.allowed() {
                true => Action::Allow,
                false => Action::Block,
            };
            match by {
                By::Rule(i) => (
                    decision,
                    "rule",
                    Some(RuleView::new(*i, &policy.acl.rules[*i])),
                ),
                By::Default => (decision, "default", None),
            }
        }
        Verdict::Private { .. } => (Action::Block, "private_destination", None),
        Verdict::Own(_) => (Action::Block, "own_address", None),
        Verdict::BadName => (Action::Block, "invalid_name", None),
    };
    TestResult {
        decision,
        by,
        rule,
        reason: policy.reason(verdict),
        addresses: addrs.iter().map(|a| a.ip().to_string()).collect(),
        addresses_judged: true,
        resolve_error,
    }
}

/// Reload the access rules
///
/// Reads the rules again from the configuration file's `[acl]` and from
/// `acl.file`, as SIGHUP does. Valid rules replace the ones in force at once, and
/// live sessions they block are closed; invalid ones change nothing (422, with
/// every problem).
#[utoipa::path(post, path = "/api/acl/reload", responses(
    (status = 200, description = "Reloaded.", body = Reloaded),
    (status = 422, response = AclNotReloaded),
))]
pub async fn reload(State(state): State<ApiState>) -> Result<Json<Reloaded>, ApiError> {
    let control = state.inner.deps.acl.clone();
    // Reading files and walking the live sessions: off the async workers.
    let done = tokio::task::spawn_blocking(move || control.reload("API"))
        .await
        .map_err(|e| ApiError::AclNotReloaded(format!("the reload failed: {e}")))?;
    done.map(Json)
        .map_err(|e| ApiError::AclNotReloaded(e.to_string()))
}
