//! Password verification on a small, fixed pool of threads that reuse their
//! argon2 memory (SPEC §16, "Memory under login floods").
//!
//! argon2id with the default parameters fills 19 MiB per verification. Run
//! on tokio's blocking pool, each verification allocated and freed that
//! much on whichever of up to 512 blocking threads picked it up; glibc keeps
//! freed memory in per-thread arenas (and, after the first large free,
//! raises its mmap threshold so later buffers land in those arenas too), so a
//! flood of failed logins from many addresses grew RSS by ~19 MiB per thread
//! ever used (10 → 480 MiB in 5 s) and it never came down.
//!
//! Here [`WORKERS`] threads at most, started once per process, each own one
//! block buffer that grows to the largest `m_cost` it has been asked for and
//! is reused for every verification: memory is bounded by `WORKERS × m_cost`
//! however long the flood, and nothing is allocated per login.

use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};

use argon2::{Algorithm, Argon2, Block, Params, PasswordHash, Version};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Threads that verify passwords: one per core, at most three, so the
/// pool's memory (three × 19 MiB with the default parameters) stays within
/// the 64 MiB that SPEC §16 allows a login flood on any machine.
pub const WORKERS: usize = 3;

/// The largest `m_cost` (KiB) a stored hash may ask for: 256 MiB, far above
/// argon2's recommendations; more is refused rather than allocated.
pub const MAX_M_COST_KIB: u32 = 256 * 1024;

/// One verification to do.
struct Job {
    password: Zeroizing<Vec<u8>>,
    phc: String,
    answer: tokio::sync::oneshot::Sender<bool>,
    /// The caller's place in the queue, held until the job is done: a
    /// cancelled login does not let another in while its job still waits.
    _slot: tokio::sync::OwnedSemaphorePermit,
}

/// The process's verification threads.
struct Pool {
    jobs: mpsc::Sender<Job>,
}

fn pool() -> Option<&'static Pool> {
    static POOL: OnceLock<Option<Pool>> = OnceLock::new();
    POOL.get_or_init(|| {
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        let workers = std::thread::available_parallelism()
            .map_or(2, usize::from)
            .clamp(1, WORKERS);
        let mut started = 0;
        for i in 0..workers {
            let receiver = receiver.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("warden-argon2-{i}"))
                .spawn(move || work(&receiver));
            match spawned {
                Ok(_) => started += 1,
                Err(err) => tracing::error!(error = %err, "cannot start a password thread"),
            }
        }
        (started > 0).then_some(Pool { jobs: sender })
    })
    .as_ref()
}

/// A worker: takes jobs until the process ends, with one buffer for all.
fn work(jobs: &Mutex<mpsc::Receiver<Job>>) {
    let mut blocks: Vec<Block> = Vec::new();
    loop {
        let job = match jobs.lock() {
            Ok(receiver) => receiver.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        // The login was cancelled (the client left, the deadline ran out):
        // nobody would read the answer.
        if job.answer.is_closed() {
            continue;
        }
        let ok = verify_with(&mut blocks, &job.password, &job.phc);
        let Job { answer, _slot, .. } = job;
        // The place is free before the answer leaves, so a caller that gets
        // its answer can count on its slot being back.
        drop(_slot);
        let _ = answer.send(ok);
    }
}

/// Whether `password` matches the PHC string `phc`, computed in `blocks`
/// (grown as needed, never shrunk). A hash that cannot be read, or that
/// asks for more than [`MAX_M_COST_KIB`], never matches.
pub(super) fn verify_with(blocks: &mut Vec<Block>, password: &[u8], phc: &str) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(hash.algorithm.as_str()) else {
        return false;
    };
    let version = match hash.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(version)) => version,
        Some(Err(_)) => return false,
    };
    let Ok(params) = Params::try_from(&hash) else {
        return false;
    };
    if params.m_cost() > MAX_M_COST_KIB {
        tracing::error!(
            m_cost_kib = params.m_cost(),
            "a stored password hash asks for more argon2 memory than warden allows"
        );
        return false;
    }
    let needed = params.block_count();
    if blocks.len() < needed {
        blocks.resize(needed, Block::default());
    }
    let expected: &[u8] = expected.as_ref();
    let mut computed = Zeroizing::new(vec![0u8; expected.len()]);
    let hashed = Argon2::new(algorithm, version, params).hash_password_into_with_memory(
        password,
        salt,
        &mut computed,
        &mut blocks[..needed],
    );
    hashed.is_ok() && bool::from(computed.as_slice().ct_eq(expected))
}

/// Verifies `password` against `phc` on the pool; `false` if the pool is
/// gone. `slot` bounds how many jobs wait at once; it is released when the
/// job is done or skipped, not when the caller stops waiting.
pub(super) async fn verify(
    password: Zeroizing<String>,
    phc: String,
    slot: tokio::sync::OwnedSemaphorePermit,
) -> bool {
    let Some(pool) = pool() else {
        return false;
    };
    let (answer, answered) = tokio::sync::oneshot::channel();
    let job = Job {
        password: Zeroizing::new(password.as_bytes().to_vec()),
        phc,
        answer,
        _slot: slot,
    };
    if pool.jobs.send(job).is_err() {
        return false;
    }
    answered.await.unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phc(password: &[u8]) -> String {
        super::super::identity::hash_password(password).unwrap_or_default()
    }

    #[test]
    fn a_reused_buffer_verifies_the_right_password_and_only_it() {
        let mut blocks = Vec::new();
        let stored = phc(b"correct horse");
        assert!(verify_with(&mut blocks, b"correct horse", &stored));
        let after_first = blocks.len();
        assert!(!verify_with(&mut blocks, b"wrong horse", &stored));
        assert!(verify_with(&mut blocks, b"correct horse", &stored));
        assert_eq!(
            blocks.len(),
            after_first,
            "the buffer is reused, not regrown"
        );
        assert_eq!(after_first, 19 * 1024, "19 MiB: argon2id's default m_cost");
    }

    #[test]
    fn unreadable_or_oversized_hashes_never_match() {
        let mut blocks = Vec::new();
        assert!(!verify_with(&mut blocks, b"x", "not a phc string"));
        assert!(!verify_with(
            &mut blocks,
            b"x",
            "$argon2id$v=19$m=4194304,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"
        ));
        assert!(blocks.is_empty(), "nothing was allocated for them");
    }

    #[tokio::test]
    async fn the_pool_answers_from_its_threads() {
        let slots = Arc::new(tokio::sync::Semaphore::new(WORKERS));
        let stored = phc(b"pw");
        let slot = slots
            .clone()
            .acquire_owned()
            .await
            .unwrap_or_else(|_| panic!("a slot"));
        assert!(verify(Zeroizing::new("pw".into()), stored.clone(), slot).await);
        let slot = slots
            .clone()
            .acquire_owned()
            .await
            .unwrap_or_else(|_| panic!("a slot"));
        assert!(!verify(Zeroizing::new("nope".into()), stored, slot).await);
        assert_eq!(slots.available_permits(), WORKERS, "every slot came back");
    }
}
