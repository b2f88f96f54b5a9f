//! `profusion tokens create|list|revoke`: access tokens, straight in the catalog the server
//! uses (found through the same flags and configuration file), so the first admin token can be
//! made before anyone can call the API.

use std::io::Write;

use profusion_api::auth::issue_token;
use profusion_model::time::now_millis;

use crate::config::{Config, TokensCommand};
use crate::storage::open_catalog;

pub(crate) async fn run(config: &Config, command: &TokensCommand) -> Result<(), String> {
    let catalog = open_catalog(&config.storage)
        .await
        .map_err(|e| e.to_string())?;
    let mut out = std::io::stdout().lock();
    let written = match command {
        TokensCommand::Create {
            tenant,
            scope,
            description,
        } => {
            let issued = issue_token(tenant, *scope, description, now_millis())?;
            catalog
                .create_token(&issued.record)
                .await
                .map_err(|e| e.to_string())?;
            eprintln!(
                "created token {} of tenant {tenant:?} with scopes {scope}; it is shown only \
                 now: the catalog keeps its hash",
                issued.record.id
            );
            writeln!(out, "{}", issued.token)
        }
        TokensCommand::List { tenant } => {
            let tokens = catalog
                .tokens(tenant.as_deref())
                .await
                .map_err(|e| e.to_string())?;
            let time = |millis: i64| {
                chrono::DateTime::from_timestamp_millis(millis).map_or_else(
                    || millis.to_string(),
                    |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                )
            };
            writeln!(
                out,
                "{:<12}  {:<20}  {:<16}  {:<25}  {:<25}  DESCRIPTION",
                "ID", "TENANT", "SCOPES", "CREATED", "REVOKED"
            )
            .and_then(|()| {
                tokens.iter().try_for_each(|t| {
                    writeln!(
                        out,
                        "{:<12}  {:<20}  {:<16}  {:<25}  {:<25}  {}",
                        t.id,
                        t.tenant,
                        t.scopes,
                        time(t.created_at_millis),
                        t.revoked_at_millis.map_or_else(|| "-".to_owned(), time),
                        t.description
                    )
                })
            })
        }
        TokensCommand::Revoke { id } => {
            let revoked = catalog
                .revoke_token(id, None, now_millis())
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("no token with id {id:?}"))?;
            writeln!(
                out,
                "revoked token {} of tenant {:?}",
                revoked.id, revoked.tenant
            )
        }
    };
    written.map_err(|e| format!("writing the answer: {e}"))
}
