//! # diffy-target-asg
//!
//! Diffy's AWS target: turns Auto Scaling group names, EC2 tag filters and
//! explicit instance ids into hosts, in one account or many, in one region or
//! many.
//!
//! - **Auto Scaling groups** resolve to their `InService` instances. Every
//!   other member (`Pending`, `Standby`, `Terminating`, `Detaching`, a
//!   lifecycle hook's `*:Wait`) is listed in the run's report as not
//!   targeted, with its lifecycle state, never silently dropped. A group that
//!   exists in none of the scopes is an error: a typo must not look like an
//!   empty fleet.
//! - **Tag filters** (`Key=Value[,Value...]`, several are ANDed, as in
//!   `DescribeInstances`) select running instances; stopped or stopping ones
//!   are listed as not targeted with their state.
//! - **Instance ids** select those instances; an id found in no scope is
//!   listed as not targeted.
//!
//! Every host is an instance id with labels: `account`, `region`, `az`,
//! `instance_type`, `launch_template` (id, name and version) or
//! `launch_configuration`, `launch_time`, `asg` and the instance's `Name`
//! tag. The `account` and `region` labels tell the `ssm` transport which
//! credentials and endpoint reach the host.
//!
//! Accounts and regions come from a [`diffy_aws::AwsContext`]: the caller's
//! own credentials, or a role assumed in each account of an inventory.
#![deny(missing_docs)]

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use aws_sdk_autoscaling::types::LifecycleState;
use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::{Filter, InstanceStateName};
use diffy_aws::{AwsContext, Scope, labels};
use diffy_core::run::NotTargeted;
use diffy_core::target::Resolution;
use diffy_core::{Error, Host, HostId, Result, Target, TargetKey};

const PLUGIN: &str = "asg";
/// Values per `DescribeInstances` filter: the API's limit is 200.
const IDS_PER_FILTER: usize = 200;

/// What to select. Several selectors add up (a host found twice is one host).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Selector {
    /// The instances of an Auto Scaling group.
    Group(String),
    /// Running instances with this tag (any of the values; all tag selectors
    /// must match).
    Tag {
        /// The tag key.
        key: String,
        /// Accepted values.
        values: Vec<String>,
    },
    /// These instances.
    Instances(Vec<String>),
}

impl Selector {
    /// Parses `KEY=VALUE[,VALUE...]`.
    pub fn tag(spec: &str) -> Result<Self> {
        match spec.split_once('=') {
            Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok(Selector::Tag {
                key: k.to_string(),
                values: v.split(',').filter(|v| !v.is_empty()).map(str::to_string).collect(),
            }),
            _ => Err(Error::invalid_with_help(
                format!("{spec:?} is not a tag filter"),
                "write KEY=VALUE, or KEY=VALUE1,VALUE2 for any of several values",
            )),
        }
    }

    /// Instance ids; each must look like one (`i-` and hex).
    pub fn instances(ids: impl IntoIterator<Item = impl Into<String>>) -> Result<Self> {
        let ids: Vec<String> = ids.into_iter().map(Into::into).collect();
        for id in &ids {
            if !is_ec2_instance_id(id) {
                return Err(Error::invalid_with_help(
                    format!("{id:?} is not an EC2 instance id"),
                    "an instance id is i- followed by 8 or 17 hex digits",
                ));
            }
        }
        Ok(Selector::Instances(ids))
    }
}

/// Whether `s` looks like an EC2 instance id.
pub fn is_ec2_instance_id(s: &str) -> bool {
    s.strip_prefix("i-").is_some_and(|h| matches!(h.len(), 8 | 17) && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn describe_selector(s: &Selector) -> String {
    match s {
        Selector::Group(g) => format!("Auto Scaling group {g}"),
        Selector::Tag { key, values } => format!("tag {key}={}", values.join(",")),
        Selector::Instances(ids) => format!("instances {}", ids.join(",")),
    }
}

/// The AWS target. See the crate documentation.
#[derive(Clone, Debug)]
pub struct AsgTarget {
    ctx: AwsContext,
    selectors: Vec<Selector>,
    only: Option<Vec<String>>,
}

impl AsgTarget {
    /// A target over `ctx`'s accounts and regions. Without selectors, the
    /// target key is taken as an Auto Scaling group name.
    pub fn new(ctx: AwsContext, selectors: Vec<Selector>) -> Self {
        Self { ctx, selectors, only: None }
    }

    /// Keeps only these instances among those the selectors find; an id the
    /// selectors do not find fails the resolution, naming it (a baseline
    /// from hosts the responder did not choose could hold the compromise).
    pub fn select(mut self, ids: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.only = Some(ids.into_iter().map(Into::into).collect());
        self
    }

    /// The AWS context.
    pub fn context(&self) -> &AwsContext {
        &self.ctx
    }
}

#[derive(Default)]
struct Found {
    hosts: Vec<Host>,
    not_targeted: Vec<NotTargeted>,
    groups: BTreeSet<String>,
    ids: BTreeSet<String>,
}

fn api_error<E>(scope: &Scope, op: &str, e: &aws_sdk_ec2::error::SdkError<E>) -> Error
where
    E: std::error::Error + aws_sdk_ec2::error::ProvideErrorMetadata + 'static,
{
    let code = e.code().unwrap_or_default().to_string();
    let help = if code.contains("AccessDenied") || code.contains("UnauthorizedOperation") || code.is_empty() {
        Some(match &scope.account {
            Some(a) => format!(
                "check that a role named as configured exists in account {a}, trusts your credentials, and may call \
                 autoscaling:DescribeAutoScalingGroups and ec2:DescribeInstances"
            ),
            None => "check your AWS credentials (aws sts get-caller-identity) and that they may call \
                     autoscaling:DescribeAutoScalingGroups and ec2:DescribeInstances"
                .to_string(),
        })
    } else {
        None
    };
    Error::Plugin {
        plugin: PLUGIN.into(),
        message: format!("{op} in {scope}: {}", aws_sdk_ec2::error::DisplayErrorContext(e)),
        help,
        source: None,
    }
}

/// What the Auto Scaling API says of a group member.
struct Member {
    group: String,
    az: Option<String>,
    instance_type: Option<String>,
    launch: Option<(&'static str, String)>,
    state: String,
}

fn host(id: &str, scope: &Scope) -> Result<Host> {
    let mut h = Host::new(HostId::new(id)?);
    h.labels.insert(labels::REGION.into(), scope.region.clone());
    if let Some(a) = &scope.account {
        h.labels.insert(labels::ACCOUNT.into(), a.clone());
    }
    Ok(h)
}

impl AsgTarget {
    async fn resolve_scope(&self, scope: Scope, selectors: &[Selector]) -> Result<Found> {
        let conf = self.ctx.config(&scope).await;
        let ec2 = aws_sdk_ec2::Client::new(&conf);
        let mut found = Found::default();

        // Auto Scaling groups.
        let groups: Vec<String> =
            selectors.iter().filter_map(|s| if let Selector::Group(g) = s { Some(g.clone()) } else { None }).collect();
        let mut members: BTreeMap<String, Member> = BTreeMap::new();
        if !groups.is_empty() {
            let asg = aws_sdk_autoscaling::Client::new(&conf);
            let mut pages = asg
                .describe_auto_scaling_groups()
                .set_auto_scaling_group_names(Some(groups.clone()))
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| api_error(&scope, "DescribeAutoScalingGroups", &e))?;
                for g in page.auto_scaling_groups() {
                    let name = g.auto_scaling_group_name().unwrap_or_default().to_string();
                    found.groups.insert(name.clone());
                    for i in g.instances() {
                        let Some(id) = i.instance_id() else { continue };
                        let launch = if let Some(lt) = i.launch_template() {
                            let what = lt.launch_template_id().or(lt.launch_template_name()).unwrap_or("?");
                            let name = match (lt.launch_template_id(), lt.launch_template_name()) {
                                (Some(_), Some(n)) => format!(" ({n})"),
                                _ => String::new(),
                            };
                            Some(("launch_template", format!("{what}{name} v{}", lt.version().unwrap_or("?"))))
                        } else {
                            i.launch_configuration_name().map(|c| ("launch_configuration", c.to_string()))
                        };
                        members.insert(
                            id.to_string(),
                            Member {
                                group: name.clone(),
                                az: i.availability_zone().map(str::to_string),
                                instance_type: i.instance_type().map(str::to_string),
                                launch,
                                state: i.lifecycle_state().map(|s| s.as_str().to_string()).unwrap_or_default(),
                            },
                        );
                    }
                }
            }
        }

        // Tag filters: one query, filters ANDed.
        let tag_filters: Vec<Filter> = selectors
            .iter()
            .filter_map(|s| match s {
                Selector::Tag { key, values } => {
                    Some(Filter::builder().name(format!("tag:{key}")).set_values(Some(values.clone())).build())
                }
                _ => None,
            })
            .collect();
        let mut by_tag = BTreeSet::new();
        let mut details = BTreeMap::new();
        if !tag_filters.is_empty() {
            for d in describe(&ec2, &scope, tag_filters).await? {
                by_tag.insert(d.id.clone());
                details.insert(d.id.clone(), d);
            }
        }

        // Explicit ids, and the details of every group member.
        let wanted: BTreeSet<String> = selectors
            .iter()
            .filter_map(|s| if let Selector::Instances(ids) = s { Some(ids.clone()) } else { None })
            .flatten()
            .collect();
        let missing: Vec<String> =
            wanted.iter().chain(members.keys()).filter(|id| !details.contains_key(*id)).cloned().collect();
        for chunk in missing.chunks(IDS_PER_FILTER) {
            let f = Filter::builder().name("instance-id").set_values(Some(chunk.to_vec())).build();
            for d in describe(&ec2, &scope, vec![f]).await? {
                details.insert(d.id.clone(), d);
            }
        }

        // Group members: InService ones are targeted.
        for (id, m) in &members {
            let mut h = host(id, &scope)?;
            h.labels.insert("asg".into(), m.group.clone());
            if let Some(az) = &m.az {
                h.labels.insert("az".into(), az.clone());
            }
            if let Some(t) = &m.instance_type {
                h.labels.insert("instance_type".into(), t.clone());
            }
            if let Some((k, v)) = &m.launch {
                h.labels.insert((*k).into(), v.clone());
            }
            if let Some(d) = details.get(id) {
                d.label(&mut h);
            }
            if m.state == LifecycleState::InService.as_str() {
                found.hosts.push(h);
            } else {
                let reason = format!("Auto Scaling lifecycle state {} in group {}", m.state, m.group);
                found.not_targeted.push(NotTargeted { host: h, reason });
            }
        }
        // Tagged and named instances: running ones are targeted.
        for id in by_tag.iter().chain(wanted.iter()) {
            if members.contains_key(id) || found.ids.contains(id) {
                continue;
            }
            let Some(d) = details.get(id) else { continue };
            found.ids.insert(id.clone());
            let mut h = host(id, &scope)?;
            d.label(&mut h);
            if d.state == InstanceStateName::Running.as_str() {
                found.hosts.push(h);
            } else {
                found.not_targeted.push(NotTargeted { host: h, reason: format!("instance state {}", d.state) });
            }
        }
        found.ids.extend(members.into_keys());
        Ok(found)
    }
}

/// What `DescribeInstances` says of an instance.
struct Details {
    id: String,
    state: String,
    owner: Option<String>,
    az: Option<String>,
    instance_type: Option<String>,
    image_id: Option<String>,
    launch_time: Option<String>,
    tags: BTreeMap<String, String>,
}

impl Details {
    fn label(&self, h: &mut Host) {
        if let Some(o) = &self.owner {
            h.labels.insert(labels::ACCOUNT.into(), o.clone());
        }
        let mut put = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                h.labels.entry(k.into()).or_insert_with(|| v.clone());
            }
        };
        put("az", &self.az);
        put("instance_type", &self.instance_type);
        // The analysis reads a cohort of one image, or launched together, as a deploy.
        put("image_id", &self.image_id);
        put("launch_time", &self.launch_time);
        put("name", &self.tags.get("Name").cloned());
        put("asg", &self.tags.get("aws:autoscaling:groupName").cloned());
        if let (Some(lt), Some(v)) =
            (self.tags.get("aws:ec2launchtemplate:id"), self.tags.get("aws:ec2launchtemplate:version"))
        {
            put("launch_template", &Some(format!("{lt} v{v}")));
        }
    }
}

async fn describe(ec2: &aws_sdk_ec2::Client, scope: &Scope, filters: Vec<Filter>) -> Result<Vec<Details>> {
    let mut out = Vec::new();
    let mut pages = ec2.describe_instances().set_filters(Some(filters)).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| api_error(scope, "DescribeInstances", &e))?;
        for r in page.reservations() {
            for i in r.instances() {
                let Some(id) = i.instance_id() else { continue };
                out.push(Details {
                    id: id.to_string(),
                    state: i.state().and_then(|s| s.name()).map(|n| n.as_str().to_string()).unwrap_or_default(),
                    owner: r.owner_id().map(str::to_string),
                    az: i.placement().and_then(|p| p.availability_zone()).map(str::to_string),
                    instance_type: i.instance_type().map(|t| t.as_str().to_string()),
                    image_id: i.image_id().map(str::to_string),
                    launch_time: i
                        .launch_time()
                        .and_then(|t| t.fmt(aws_sdk_ec2::primitives::DateTimeFormat::DateTime).ok()),
                    tags: i
                        .tags()
                        .iter()
                        .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or_default().to_string())))
                        .collect(),
                });
            }
        }
    }
    Ok(out)
}

#[async_trait]
impl Target for AsgTarget {
    fn name(&self) -> &str {
        PLUGIN
    }

    async fn resolve(&self, key: &TargetKey) -> Result<Resolution> {
        let selectors =
            if self.selectors.is_empty() { vec![Selector::Group(key.to_string())] } else { self.selectors.clone() };
        let scopes = self.ctx.scopes();
        let results =
            futures::future::try_join_all(scopes.iter().map(|s| self.resolve_scope(s.clone(), &selectors))).await?;
        let mut out = Resolution::default();
        let mut groups = BTreeSet::new();
        let mut ids = BTreeSet::new();
        for f in results {
            groups.extend(f.groups);
            ids.extend(f.ids);
            for h in f.hosts {
                if !out.hosts.iter().any(|x| x.id == h.id) {
                    out.hosts.push(h);
                }
            }
            out.not_targeted.extend(f.not_targeted);
        }
        let where_ = scopes.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        for s in &selectors {
            match s {
                Selector::Group(g) if !groups.contains(g) => {
                    return Err(Error::Plugin {
                        plugin: PLUGIN.into(),
                        message: format!("no Auto Scaling group named {g:?} in {where_}"),
                        help: Some(
                            "check the name (aws autoscaling describe-auto-scaling-groups), the region (--region) and \
                             the accounts (--account, --accounts FILE)"
                                .into(),
                        ),
                        source: None,
                    });
                }
                Selector::Instances(want) => {
                    for id in want.iter().filter(|id| !ids.contains(*id)) {
                        out.not_targeted.push(NotTargeted {
                            host: Host::new(HostId::new(id.as_str())?),
                            reason: format!("no such instance in {where_}"),
                        });
                    }
                }
                _ => {}
            }
        }
        if let Some(only) = &self.only {
            let unknown: Vec<&str> =
                only.iter().filter(|id| !out.hosts.iter().any(|h| h.id.as_str() == *id)).map(|s| s.as_str()).collect();
            if !unknown.is_empty() {
                let what: Vec<String> = selectors.iter().map(describe_selector).collect();
                return Err(Error::Plugin {
                    plugin: PLUGIN.into(),
                    message: format!(
                        "{} {} not among the running instances of {} in {where_}",
                        unknown.join(", "),
                        if unknown.len() == 1 { "is" } else { "are" },
                        what.join(" and ")
                    ),
                    help: Some(
                        "--host and --hosts choose among the target's instances; name instances outside it with \
                         --instance-id"
                            .into(),
                    ),
                    source: None,
                });
            }
            out.hosts.retain(|h| only.iter().any(|id| id == h.id.as_str()));
            out.not_targeted.retain(|n| only.iter().any(|id| id == n.host.id.as_str()));
        }
        out.hosts.sort_by(|a, b| a.id.cmp(&b.id));
        out.not_targeted.sort_by(|a, b| a.host.id.cmp(&b.host.id));
        out.not_targeted.dedup_by(|a, b| a.host.id == b.host.id);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors() {
        assert_eq!(
            Selector::tag("Service=api,api-canary").unwrap(),
            Selector::Tag { key: "Service".into(), values: vec!["api".into(), "api-canary".into()] }
        );
        assert!(Selector::tag("Service").is_err());
        assert!(Selector::tag("=x").is_err());
        assert!(Selector::instances(["i-0123456789abcdef0", "i-12345678"]).is_ok());
        let e = Selector::instances(["i-0123; reboot"]).unwrap_err();
        assert!(e.to_string().contains("not an EC2 instance id"), "{e}");
    }
}
