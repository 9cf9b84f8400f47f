//! Leadership: a Lease elects one replica; the others stand by, ready, and a
//! term ends (its caches and tasks dropped) the moment the Lease is lost. Only
//! the leader writes.

use std::sync::atomic::Ordering;
use std::time::Duration;

use ferrolb_common::lock;
use kube::Client;
use tokio::sync::watch;

use crate::ProcessState;
use crate::alloc::Allocator;
use crate::settings::Settings;
use crate::term;

/// Run until `shutdown` fires; returns an error if a critical task died.
pub async fn run(
    client: Client,
    settings: Settings,
    state: ProcessState,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let (leader_tx, mut leader_rx) = watch::channel(!settings.leader_elect);
    let lease_task = if settings.leader_elect {
        let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), settings.instance_name())
            .with_namespace(&settings.namespace)
            .with_identity(&settings.identity)
            .with_duration(settings.lease_duration.as_secs().max(2))
            .with_grace((settings.lease_duration.as_secs() / 3).max(1))
            .with_field_manager(format!("{}-lease", settings.instance_name()))
            .build()
            .await?;
        let (mut rx, task) = manager.watch().await;
        // Forward lease state; dropping rx (on shutdown) makes the manager release the lease.
        let mut stop = shutdown.clone();
        Some(tokio::spawn(async move {
            loop {
                tokio::select! {
                    r = rx.changed() => if r.is_err() { break },
                    _ = stop.changed() => break,
                }
                let _ = leader_tx.send(*rx.borrow_and_update());
            }
            drop(rx);
            let _ = task.await;
        }))
    } else {
        None
    };
    state.ready.store(true, Ordering::SeqCst);
    loop {
        // Stand by until this replica leads.
        while !*leader_rx.borrow_and_update() {
            state.metrics.leader.set(0);
            state.ready.store(true, Ordering::SeqCst);
            tokio::select! {
                r = leader_rx.changed() => if r.is_err() { anyhow::bail!("leader election stopped") },
                _ = shutdown.changed() => return finish(lease_task).await,
            }
        }
        tracing::info!(identity = %settings.identity, "leading");
        state.metrics.leader.set(1);
        state.ready.store(false, Ordering::SeqCst);
        let term = term::lead(client.clone(), settings.clone(), state.clone());
        tokio::select! {
            r = term => { r?; anyhow::bail!("the controller stopped unexpectedly") }
            _ = leader_rx.changed() => {
                tracing::warn!("lost leadership; standing by");
                // A fresh allocator next term: state is rebuilt from the API.
                *lock(&state.alloc) = Allocator::new();
            }
            _ = shutdown.changed() => return finish(lease_task).await,
        }
    }
}

/// Give the lease back (so a standby takes over at once) and return.
async fn finish(lease: Option<tokio::task::JoinHandle<()>>) -> anyhow::Result<()> {
    if let Some(task) = lease {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    Ok(())
}
