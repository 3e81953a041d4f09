//! S3 through the `object_store` crate, with the AWS SDK's credentials.
//!
//! Used by the `s3` evidence store and by the `ssm` transport to read full
//! command output from an output bucket.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use object_store::aws::{AmazonS3, AmazonS3Builder, AwsCredential};

use diffy_core::{Error, Result};

use crate::AwsContext;

/// Whether `name` is a plausible S3 bucket name (3 to 63 characters of
/// lowercase letters, digits, `-` and `.`; older buckets may hold `_` and
/// capitals, which S3 still serves).
pub fn is_bucket_name(name: &str) -> bool {
    (3..=63).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

/// Splits `s3://bucket[/prefix]` into the bucket and the prefix (without
/// slashes at either end). `None` when `url` is not an `s3://` URL or the
/// bucket name is not one.
pub fn parse_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("s3://")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    is_bucket_name(bucket).then(|| (bucket.to_string(), prefix.trim_matches('/').to_string()))
}

/// An S3 client for `bucket` with the context's base credentials (the
/// standard chain, refreshed before they expire) and its first region.
/// `AWS_ENDPOINT_URL_S3`, or the context's endpoint (`AWS_ENDPOINT_URL`),
/// point it at another endpoint (path-style requests, plain HTTP allowed
/// there). A client that cannot be built is an [`Error::Plugin`] naming
/// the bucket.
pub fn store(bucket: &str, aws: &AwsContext) -> Result<AmazonS3> {
    let region = aws.scopes().into_iter().next().map(|s| s.region).unwrap_or_else(|| "us-east-1".into());
    let mut b = AmazonS3Builder::new().with_bucket_name(bucket).with_region(region);
    if let Some(creds) = aws.base().credentials_provider() {
        b = b.with_credentials(Arc::new(SdkCredentials::new(creds)));
    }
    let endpoint = std::env::var("AWS_ENDPOINT_URL_S3").ok().or_else(|| aws.base().endpoint_url().map(str::to_string));
    if let Some(e) = endpoint.filter(|e| !e.is_empty()) {
        b = b.with_allow_http(e.starts_with("http://")).with_endpoint(e).with_virtual_hosted_style_request(false);
    }
    b.build().map_err(|e| Error::Plugin {
        plugin: "s3".into(),
        message: format!("cannot open the S3 bucket {bucket:?}: {e}"),
        help: None,
        source: Some(Box::new(e)),
    })
}

/// The AWS SDK's credential chain (profiles, SSO, assumed roles) as
/// object_store credentials, cached until five minutes before they expire.
#[derive(Debug)]
struct SdkCredentials {
    provider: SharedCredentialsProvider,
    cached: tokio::sync::Mutex<Option<(Arc<AwsCredential>, Option<SystemTime>)>>,
}

impl SdkCredentials {
    fn new(provider: SharedCredentialsProvider) -> Self {
        Self { provider, cached: tokio::sync::Mutex::new(None) }
    }
}

#[async_trait::async_trait]
impl object_store::CredentialProvider for SdkCredentials {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        let mut cached = self.cached.lock().await;
        if let Some((c, expiry)) = cached.as_ref() {
            let fresh = expiry.is_none_or(|t| t > SystemTime::now() + Duration::from_secs(300));
            if fresh {
                return Ok(c.clone());
            }
        }
        let c = self
            .provider
            .provide_credentials()
            .await
            .map_err(|e| object_store::Error::Generic { store: "S3", source: Box::new(e) })?;
        let cred = Arc::new(AwsCredential {
            key_id: c.access_key_id().to_string(),
            secret_key: c.secret_access_key().to_string(),
            token: c.session_token().map(str::to_string),
        });
        *cached = Some((cred.clone(), c.expiry()));
        Ok(cred)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(parse_url("s3://diffy-evidence/IR-1/"), Some(("diffy-evidence".into(), "IR-1".into())));
        assert_eq!(parse_url("s3://diffy-evidence"), Some(("diffy-evidence".into(), String::new())));
        for bad in ["s3://", "s3:///x", "gs://b/p", "s3://a/x", "s3://b?c/x", "s3://../x"] {
            assert_eq!(parse_url(bad), None, "{bad}");
        }
    }
}
