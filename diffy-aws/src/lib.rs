//! # diffy-aws
//!
//! What Diffy's AWS plugins share (the `asg` target, the `ssm` transport, the
//! `s3` store):
//!
//! - credentials from the standard chain (`aws-config`: environment,
//!   profiles, SSO, web identity, container and instance roles), with the
//!   standard `AWS_ENDPOINT_URL` and per-service `AWS_ENDPOINT_URL_<SERVICE>`
//!   overrides honoured, so the same binary runs against a local endpoint;
//! - the adaptive retry mode (client-side rate limiting, exponential backoff
//!   with jitter), so throttling slows a run down instead of failing hosts;
//! - many accounts and regions: a [`Scope`] is one account (or the caller's
//!   own) in one region; [`AwsContext::config`] gives its SDK configuration,
//!   assuming the role `arn:aws:iam::ACCOUNT:role/ROLE` (role name
//!   configurable, per account too) with the caller's credentials, cached
//!   per scope;
//! - an inventory of accounts from a file ([`parse_inventory`]);
//! - S3 through `object_store` with the SDK's credentials ([`s3`]).
//!
//! Credentials only ever travel to AWS's own endpoints through the SDK; none
//! is ever put into a command sent to a host.
#![deny(missing_docs)]

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;
use diffy_core::{Error, Result};

pub mod s3;

const PLUGIN: &str = "aws";

/// The role Diffy assumes in each account unless told otherwise.
pub const DEFAULT_ROLE_NAME: &str = "DiffyTriage";

/// Label names the AWS plugins put on hosts (and read back): the account and
/// region a host lives in decide which API endpoint and credentials reach it.
pub mod labels {
    /// The 12-digit account id.
    pub const ACCOUNT: &str = "account";
    /// The region, e.g. `eu-west-1`.
    pub const REGION: &str = "region";
}

/// One account of an inventory. In a settings file, an account id
/// (`"123456789012"`) or a table with `id` and optional `name`, `regions`
/// and `role`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Account {
    /// The 12-digit account id.
    pub id: String,
    /// A human name (`prod`), for reports.
    pub name: Option<String>,
    /// Regions to look in; empty means the context's regions.
    pub regions: Vec<String>,
    /// The role to assume there; `None` means the context's role name.
    pub role: Option<String>,
}

impl Account {
    /// An account by id, with the context's regions and role.
    pub fn new(id: impl Into<String>) -> Result<Self> {
        let id = id.into();
        if !is_account_id(&id) {
            return Err(Error::invalid_with_help(
                format!("{id:?} is not an AWS account id"),
                "an account id is 12 digits, e.g. 123456789012",
            ));
        }
        Ok(Self { id, name: None, regions: Vec::new(), role: None })
    }
}

impl<'de> serde::Deserialize<'de> for Account {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Written {
            id: String,
            name: Option<String>,
            #[serde(default)]
            regions: Vec<String>,
            role: Option<String>,
        }
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Entry {
            Id(String),
            Table(Written),
        }
        let w = match Entry::deserialize(d)? {
            Entry::Id(id) => Written { id, name: None, regions: Vec::new(), role: None },
            Entry::Table(w) => w,
        };
        let mut a = Account::new(w.id).map_err(D::Error::custom)?;
        if let Some(r) = w.regions.iter().find(|r| !is_region(r)) {
            return Err(D::Error::custom(format!("{r:?} is not a region name")));
        }
        if let Some(r) = w.role.as_deref().filter(|r| !is_role_name(r)) {
            return Err(D::Error::custom(format!("{r:?} is not an IAM role name")));
        }
        a.name = w.name;
        a.regions = w.regions;
        a.role = w.role;
        Ok(a)
    }
}

/// Whether `s` is a 12-digit account id.
pub fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_region(s: &str) -> bool {
    !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn is_role_name(s: &str) -> bool {
    // IAM role names (with an optional path): letters, digits and +=,.@_-.
    !s.is_empty()
        && s.len() <= 512
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-/".contains(&b))
        && !s.starts_with('/')
}

/// Reads an inventory of accounts: one account per line,
/// `ACCOUNT_ID [name=NAME] [regions=R1,R2] [role=ROLE]`; blank lines and `#`
/// comments are skipped.
pub fn parse_inventory(text: &str, source: &str) -> Result<Vec<Account>> {
    const HELP: &str = "write one account per line: ACCOUNT_ID [name=NAME] [regions=us-east-1,eu-west-1] [role=ROLE]";
    let mut out: Vec<Account> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let at = |m: String| Error::invalid_with_help(format!("{source}:{}: {m}", n + 1), HELP);
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        let id = words.next().unwrap_or_default();
        let mut account = Account::new(id).map_err(|e| at(e.to_string()))?;
        for w in words {
            match w.split_once('=') {
                Some(("name", v)) if !v.is_empty() => account.name = Some(v.to_string()),
                Some(("regions" | "region", v)) => {
                    for r in v.split(',').filter(|r| !r.is_empty()) {
                        if !is_region(r) {
                            return Err(at(format!("{r:?} is not a region name")));
                        }
                        account.regions.push(r.to_string());
                    }
                }
                Some(("role", v)) if is_role_name(v) => account.role = Some(v.to_string()),
                Some(("role", v)) => return Err(at(format!("{v:?} is not an IAM role name"))),
                _ => return Err(at(format!("unexpected word {w:?}"))),
            }
        }
        if out.iter().any(|a| a.id == account.id) {
            return Err(at(format!("account {} is listed twice", account.id)));
        }
        out.push(account);
    }
    Ok(out)
}

/// Reads an inventory file (see [`parse_inventory`]).
pub fn read_inventory(path: &Path) -> Result<Vec<Account>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(PLUGIN, "read", path, e))?;
    parse_inventory(&text, &path.display().to_string())
}

/// One account (or the caller's own, `account: None`) in one region.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope {
    /// The account whose role is assumed; `None` for the caller's own credentials.
    pub account: Option<String>,
    /// The region.
    pub region: String,
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.account {
            Some(a) => write!(f, "{a}/{}", self.region),
            None => write!(f, "{}", self.region),
        }
    }
}

/// Settings of an [`AwsContext`].
///
/// Written in `diffy.toml` as `[aws]` (or a request body) with these names:
///
/// ```
/// let o: diffy_aws::AwsOptions = serde_json::from_str(
///     r#"{ "accounts": ["111111111111", { "id": "222222222222", "regions": ["eu-west-1"] }], "role_name": "Triage" }"#,
/// ).unwrap();
/// assert_eq!(o.accounts[1].regions, ["eu-west-1"]);
/// assert_eq!(o.session_name, "diffy");
/// ```
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct AwsOptions {
    /// Accounts to work in (assuming a role in each); empty means the
    /// caller's own account only.
    pub accounts: Vec<Account>,
    /// Regions, for accounts that name none; empty means the region of the
    /// standard chain (`AWS_REGION`, the profile).
    pub regions: Vec<String>,
    /// The role assumed in each account. Default [`DEFAULT_ROLE_NAME`].
    pub role_name: String,
    /// The assumed-role session name, seen in CloudTrail. Default `diffy`.
    #[serde(deserialize_with = "session_name")]
    pub session_name: String,
    /// Attempts per API call in the adaptive retry mode. Default 10.
    #[serde(deserialize_with = "diffy_core::settings::at_least_one::deserialize")]
    pub max_attempts: u32,
}

impl Default for AwsOptions {
    fn default() -> Self {
        Self {
            accounts: Vec::new(),
            regions: Vec::new(),
            role_name: DEFAULT_ROLE_NAME.into(),
            session_name: "diffy".into(),
            max_attempts: 10,
        }
    }
}

impl AwsOptions {
    /// Adds accounts.
    pub fn accounts(mut self, a: impl IntoIterator<Item = Account>) -> Self {
        self.accounts.extend(a);
        self
    }

    /// Adds regions.
    pub fn regions(mut self, r: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.regions.extend(r.into_iter().map(Into::into));
        self
    }

    /// Sets the role name assumed in each account.
    pub fn role_name(mut self, r: impl Into<String>) -> Self {
        self.role_name = r.into();
        self
    }

    /// Sets the session name: `diffy-<incident>` makes the calls easy to
    /// find in CloudTrail. Characters IAM refuses become `-`; cut to 64.
    pub fn session_name(mut self, s: impl AsRef<str>) -> Self {
        if let Some(clean) = clean_session_name(s.as_ref()) {
            self.session_name = clean;
        }
        self
    }
}

/// A session name IAM takes (characters it refuses become `-`, cut to 64),
/// if at least 2 characters are left.
fn clean_session_name(s: &str) -> Option<String> {
    let clean: String =
        s.chars().map(|c| if c.is_ascii_alphanumeric() || "=,.@-_".contains(c) { c } else { '-' }).take(64).collect();
    (clean.len() >= 2).then_some(clean)
}

fn session_name<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    let s = <String as serde::Deserialize>::deserialize(d)?;
    clean_session_name(&s).ok_or_else(|| serde::de::Error::custom("a session name needs at least 2 characters"))
}

/// Where the AWS plugins get their SDK configuration from. Cheap to clone.
#[derive(Clone)]
pub struct AwsContext {
    base: SdkConfig,
    options: Arc<AwsOptions>,
    cache: Arc<tokio::sync::Mutex<HashMap<Scope, SdkConfig>>>,
}

impl fmt::Debug for AwsContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsContext")
            .field("region", &self.base.region())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// The retry settings every AWS plugin uses: adaptive (client-side rate
/// limiting that backs off on throttling), exponential backoff with jitter.
pub fn retry_config(max_attempts: u32) -> RetryConfig {
    RetryConfig::adaptive()
        .with_max_attempts(max_attempts.max(1))
        .with_initial_backoff(Duration::from_millis(200))
        .with_max_backoff(Duration::from_secs(10))
}

impl AwsContext {
    /// Loads the standard chain (environment, profiles, SSO, roles; endpoint
    /// overrides) with the adaptive retry mode.
    pub async fn from_env(options: AwsOptions) -> Result<Self> {
        let base = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(retry_config(options.max_attempts))
            .load()
            .await;
        Self::new(base, options)
    }

    /// A context over a configuration the caller built.
    pub fn new(base: SdkConfig, options: AwsOptions) -> Result<Self> {
        for r in options.regions.iter().chain(options.accounts.iter().flat_map(|a| &a.regions)) {
            if !is_region(r) {
                return Err(Error::invalid(format!("{r:?} is not a region name")));
            }
        }
        if !is_role_name(&options.role_name) {
            return Err(Error::invalid(format!("{:?} is not an IAM role name", options.role_name)));
        }
        // Assuming a role needs a clock and a sleep; a hand-built config may lack them.
        let mut base = base;
        if base.time_source().is_none() || base.sleep_impl().is_none() {
            let mut b = base.to_builder();
            if base.time_source().is_none() {
                b = b.time_source(aws_smithy_async::time::SystemTimeSource::new());
            }
            if base.sleep_impl().is_none() {
                b.set_sleep_impl(aws_smithy_async::rt::sleep::default_async_sleep());
            }
            base = b.build();
        }
        let ctx = Self { base, options: Arc::new(options), cache: Default::default() };
        if ctx.scopes().is_empty() {
            return Err(Error::invalid_with_help(
                "no AWS region is configured",
                "set AWS_REGION (or a region in your AWS profile), or name regions with --region",
            ));
        }
        Ok(ctx)
    }

    /// The configuration of the standard chain, as loaded.
    pub fn base(&self) -> &SdkConfig {
        &self.base
    }

    /// The settings.
    pub fn options(&self) -> &AwsOptions {
        &self.options
    }

    fn default_regions(&self) -> Vec<String> {
        if !self.options.regions.is_empty() {
            return self.options.regions.clone();
        }
        self.base.region().map(|r| vec![r.to_string()]).unwrap_or_default()
    }

    /// Every scope to look in: each account × its regions, or the caller's
    /// own account in each region.
    pub fn scopes(&self) -> Vec<Scope> {
        let default = self.default_regions();
        if self.options.accounts.is_empty() {
            return default.into_iter().map(|region| Scope { account: None, region }).collect();
        }
        let mut out = Vec::new();
        for a in &self.options.accounts {
            let regions = if a.regions.is_empty() { &default } else { &a.regions };
            for r in regions {
                out.push(Scope { account: Some(a.id.clone()), region: r.clone() });
            }
        }
        out
    }

    /// The scope a host lives in, from its `account` and `region` labels
    /// (the `asg` target sets them); the first scope when it has none.
    pub fn scope_of(&self, labels: &std::collections::BTreeMap<String, String>) -> Scope {
        let region = labels.get(labels::REGION).cloned();
        let account = labels.get(labels::ACCOUNT).cloned();
        let fallback = self.scopes().into_iter().next().expect("a context has at least one scope");
        let known = |a: &String| self.options.accounts.iter().any(|x| &x.id == a);
        Scope {
            // Only accounts of the inventory are assumed into; a host of the
            // caller's own account is reached with the caller's credentials.
            account: account.filter(known),
            region: region.filter(|r| is_region(r)).unwrap_or(fallback.region),
        }
    }

    /// The role ARN assumed for `account`.
    pub fn role_arn(&self, account: &str) -> String {
        let role = self
            .options
            .accounts
            .iter()
            .find(|a| a.id == account)
            .and_then(|a| a.role.clone())
            .unwrap_or_else(|| self.options.role_name.clone());
        format!("arn:aws:iam::{account}:role/{role}")
    }

    /// The SDK configuration for `scope`: the caller's credentials in its
    /// region, or the account's assumed role. Cached; credentials refresh
    /// themselves before they expire.
    pub async fn config(&self, scope: &Scope) -> SdkConfig {
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.get(scope) {
            return c.clone();
        }
        let region = Region::new(scope.region.clone());
        let conf = match &scope.account {
            None => self.base.to_builder().region(region).build(),
            Some(account) => {
                let provider = AssumeRoleProvider::builder(self.role_arn(account))
                    .session_name(self.options.session_name.clone())
                    .region(region.clone())
                    .configure(&self.base)
                    .build()
                    .await;
                self.base
                    .to_builder()
                    .region(region)
                    .credentials_provider(SharedCredentialsProvider::new(provider))
                    .build()
            }
        };
        cache.insert(scope.clone(), conf.clone());
        conf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inventories() {
        let a = parse_inventory(
            "# prod and staging\n111111111111 name=prod regions=us-east-1,eu-west-1\n\n222222222222 role=Ops/Triage\n",
            "accounts.txt",
        )
        .unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].name.as_deref(), Some("prod"));
        assert_eq!(a[0].regions, ["us-east-1", "eu-west-1"]);
        assert_eq!(a[1].role.as_deref(), Some("Ops/Triage"));
        for (bad, why) in [
            ("1234\n", "not an AWS account id"),
            ("111111111111 regions=us-east-1;rm\n", "not a region"),
            ("111111111111 role=$(id)\n", "not an IAM role"),
            ("111111111111\n111111111111\n", "listed twice"),
            ("111111111111 colour=red\n", "unexpected word"),
        ] {
            let e = parse_inventory(bad, "f").unwrap_err().to_string();
            assert!(e.contains(why) && e.starts_with("f:"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn scopes_and_roles() {
        let base = SdkConfig::builder().region(Region::new("us-east-1")).build();
        let own = AwsContext::new(base.clone(), AwsOptions::default()).unwrap();
        assert_eq!(own.scopes(), [Scope { account: None, region: "us-east-1".into() }]);
        let mut prod = Account::new("111111111111").unwrap();
        prod.regions = vec!["eu-west-1".into(), "us-west-2".into()];
        prod.role = Some("IR".into());
        let ctx = AwsContext::new(
            base.clone(),
            AwsOptions::default().accounts([prod, Account::new("222222222222").unwrap()]),
        )
        .unwrap();
        let s: Vec<String> = ctx.scopes().iter().map(ToString::to_string).collect();
        assert_eq!(s, ["111111111111/eu-west-1", "111111111111/us-west-2", "222222222222/us-east-1"]);
        assert_eq!(ctx.role_arn("111111111111"), "arn:aws:iam::111111111111:role/IR");
        assert_eq!(ctx.role_arn("222222222222"), "arn:aws:iam::222222222222:role/DiffyTriage");
        let labels = [("account".to_string(), "222222222222".to_string()), ("region".into(), "ap-south-1".into())];
        let scope = ctx.scope_of(&labels.into_iter().collect());
        assert_eq!(scope.to_string(), "222222222222/ap-south-1");
        let stranger = [("account".to_string(), "999999999999".to_string())];
        assert_eq!(ctx.scope_of(&stranger.into_iter().collect()).account, None, "only inventory accounts are assumed");
        let no_region = AwsContext::new(SdkConfig::builder().build(), AwsOptions::default()).unwrap_err();
        assert!(no_region.to_string().contains("no AWS region"), "{no_region}");
        assert_eq!(AwsOptions::default().session_name("diffy IR-1234/x").session_name, "diffy-IR-1234-x");
    }
}
