//! What of the connections outlives a reload: the open vault (an embedded
//! file is opened once per process) and the users' tokens in use, so a
//! reload neither drops a refresh in flight nor forgets a login loop.

use std::sync::{Arc, Mutex};

use super::seal::Sealer;
use super::tokens::TokenCache;
use super::vault::{REDIS_TABLE, Vault, embedded_path};
use super::{OauthConnectionSettings, OauthConnections, SetupError};
use crate::audit::AuditLog;
use crate::credentials::CredentialsSettings;
use crate::credentials::store::MasterKey;
use crate::shared_state::SharedState;

/// The vault and tokens of this process, across generations.
#[derive(Debug, Default)]
pub struct LastingConnections {
    vault: Mutex<Option<(String, Arc<Vault>)>>,
    cache: Arc<TokenCache>,
}

/// Opens the vault of `credentials` (its file, or the shared Redis).
pub fn open_vault(
    credentials: &CredentialsSettings,
    shared: &SharedState,
) -> Result<Vault, SetupError> {
    match shared.records(REDIS_TABLE) {
        Some(records) => Ok(Vault::redis(records)),
        None => Vault::open_embedded(&embedded_path(&credentials.store))
            .map_err(|e| SetupError::Vault(e.to_string())),
    }
}

impl LastingConnections {
    /// The connections of one generation; `None` when none are configured.
    pub fn build(
        &self,
        settings: &[OauthConnectionSettings],
        credentials: Option<&CredentialsSettings>,
        shared: &SharedState,
        audit: AuditLog,
        refresh_total: prometheus::IntCounterVec,
    ) -> Result<Option<Arc<OauthConnections>>, SetupError> {
        if settings.is_empty() {
            return Ok(None);
        }
        let Some(credentials) = credentials else {
            return Err(SetupError::Vault(
                "[[oauth_connections]] needs [credentials] for its master key".into(),
            ));
        };
        let master = MasterKey::load(&credentials.master_key)
            .map_err(|e| SetupError::Vault(e.to_string()))?;
        let sealer = Sealer::new(&master)?;
        let place = match shared.records(REDIS_TABLE) {
            Some(_) => "redis".to_owned(),
            None => embedded_path(&credentials.store).display().to_string(),
        };
        let vault = {
            let mut held = self
                .vault
                .lock()
                .map_err(|_| SetupError::Vault("the vault registry is poisoned".into()))?;
            match held.as_ref().filter(|(at, _)| *at == place) {
                Some((_, vault)) => vault.clone(),
                None => {
                    let vault = Arc::new(open_vault(credentials, shared)?);
                    *held = Some((place, vault.clone()));
                    vault
                }
            }
        };
        OauthConnections::new(
            settings,
            vault,
            self.cache.clone(),
            sealer,
            audit,
            refresh_total,
        )
        .map(|c| Some(Arc::new(c)))
    }
}
