//! `warden connections list|remove`, and the re-sealing of the users'
//! connection records when the master key rotates. They open the vault the
//! gateway uses (the redb file beside the credential store, or the shared
//! Redis); a running gateway may have it open at the same time.

use std::fmt::Write as _;

use super::CliError;
use crate::credentials::store::MasterKey;
use crate::oauth_connections::seal::Sealer;
use crate::oauth_connections::vault::{REDIS_TABLE, StoredRecord, Vault, embedded_path};
use crate::oauth_connections::{open_record, seal_record};
use crate::shared_state::SharedState;

/// Runs `work` on the config's vault, in a runtime of its own.
fn with_vault<T>(
    config: &crate::Config,
    work: impl AsyncFnOnce(&Vault) -> Result<T, CliError>,
) -> Result<T, CliError> {
    let credentials = config
        .credentials
        .as_ref()
        .ok_or(CliError::NotConfigured("[credentials] section"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Vault(e.to_string()))?;
    runtime.block_on(async {
        let records = SharedState::records_for_tool(&config.shared_state, REDIS_TABLE)
            .map_err(|e| CliError::Vault(e.to_string()))?;
        let vault = match records {
            Some(records) => Vault::redis(records),
            None => Vault::open_embedded(&embedded_path(&credentials.store))
                .map_err(|e| CliError::Vault(e.to_string()))?,
        };
        work(&vault).await
    })
}

fn vault_error(err: crate::oauth_connections::vault::VaultError) -> CliError {
    CliError::Vault(err.to_string())
}

fn time(seconds: i64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(seconds).unwrap_or(0)),
    )
    .to_string()
}

/// `warden connections list`: connection, subject, issuer, times; never a token.
pub fn connections_list(config: &crate::Config) -> Result<String, CliError> {
    let records = with_vault(config, async |vault| {
        vault.list().await.map_err(vault_error)
    })?;
    let mut out = format!(
        "{:<16} {:<24} {:<20} {:<20} {:<20} {}\n",
        "CONNECTION", "SUB", "CREATED", "REFRESHED", "EXPIRES", "ISS"
    );
    for record in &records {
        let _ = writeln!(
            out,
            "{:<16} {:<24} {:<20} {:<20} {:<20} {}",
            record.id.connection,
            record.id.sub,
            time(record.created),
            time(record.refreshed),
            record.expires_at.map_or_else(|| "-".to_owned(), time),
            record.id.iss,
        );
    }
    Ok(out)
}

/// `warden connections remove NAME SUB`: removes the subject's records at
/// the connection (from every issuer); how many. A running gateway stops
/// using the tokens within a minute (at once through its admin API).
pub fn connections_remove(
    config: &crate::Config,
    name: &str,
    sub: &str,
) -> Result<usize, CliError> {
    let removed = with_vault(config, async |vault| {
        let mut removed = 0;
        for record in vault.list().await.map_err(vault_error)? {
            if record.id.connection == name
                && record.id.sub == sub
                && vault.remove(&record.id).await.map_err(vault_error)?
            {
                removed += 1;
            }
        }
        Ok(removed)
    })?;
    if removed == 0 {
        return Err(CliError::NoSuchConnection(name.to_owned(), sub.to_owned()));
    }
    Ok(removed)
}

/// Re-seals every connection record from `old` to `new`, then runs
/// `rotate_store`; if that fails, the records are put back as they were,
/// so the vault and the store always share one key. Records that do not
/// open under `old` are left as they are (they are unusable already).
pub fn reseal_then(
    config: &crate::Config,
    old: &MasterKey,
    new: &MasterKey,
    rotate_store: impl FnOnce() -> Result<(), CliError>,
) -> Result<usize, CliError> {
    // Whatever the config lists now: records made under an earlier config
    // are sealed under this key too.
    let has_vault = match &config.credentials {
        None => false,
        Some(credentials) => {
            !matches!(
                config.shared_state.backend,
                crate::shared_state::Backend::Memory
            ) || embedded_path(&credentials.store).exists()
        }
    };
    if !has_vault {
        rotate_store()?;
        return Ok(0);
    }
    let old_sealer = Sealer::new(old).map_err(|e| CliError::Vault(e.to_string()))?;
    let new_sealer = Sealer::new(new).map_err(|e| CliError::Vault(e.to_string()))?;
    with_vault(config, async |vault| {
        let original = vault.list().await.map_err(vault_error)?;
        let mut resealed: Vec<StoredRecord> = Vec::new();
        for record in &original {
            let Ok(tokens) = open_record(&old_sealer, &record.id, record) else {
                continue;
            };
            let mut sealed = seal_record(
                &new_sealer,
                &record.id,
                &tokens,
                record.created,
                record.scope.clone(),
            )
            .map_err(|e| CliError::Vault(e.to_string()))?;
            sealed.refreshed = record.refreshed;
            resealed.push(sealed);
        }
        let count = resealed.len();
        vault.put_all(resealed).await.map_err(vault_error)?;
        if let Err(err) = rotate_store() {
            vault.put_all(original).await.map_err(|e| {
                CliError::Vault(format!(
                    "the store was not rotated ({err}) and the connection records could not be put back under the old key ({e}): users must connect again"
                ))
            })?;
            return Err(err);
        }
        Ok(count)
    })
}
