//! Lock waits said out loud: while a command runs, a session of its own looks every
//! [`EVERY`] for the command's sessions (same `application_name`, same database) that
//! wait on a lock, and logs who holds it — the session's user, application, state and
//! query — so a load stuck behind an open transaction says why instead of waiting in
//! silence.
//!
//! Input: the target URL. Output: warnings in the log, until the returned guard drops.

use std::time::Duration;

use tokio_postgres::Client;

use super::connect::connect;

/// How often lock waits are looked for (and said again while they last).
pub const EVERY: Duration = Duration::from_secs(10);

/// Stops the watcher when dropped.
pub struct LockWatch(tokio::task::JoinHandle<()>);

impl Drop for LockWatch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts the watcher on a connection of its own (none when it cannot connect: the
/// command itself then reports the connection problem).
pub fn watch_lock_waits(url: &str) -> LockWatch {
    let url = url.to_string();
    LockWatch(tokio::spawn(async move {
        let mut client: Option<Client> = None;
        loop {
            tokio::time::sleep(EVERY).await;
            if client.as_ref().is_none_or(Client::is_closed) {
                client = connect(&url).await.ok();
            }
            let Some(c) = &client else { continue };
            match waits(c).await {
                Ok(lines) => {
                    for l in lines {
                        tracing::warn!("{l}");
                    }
                }
                Err(e) => tracing::debug!(error = %e, "Could not look for lock waits."),
            }
        }
    }))
}

/// Waits shorter than this are not worth a line.
const AT_LEAST: f64 = 5.0;

/// One line per (waiting session, blocking session) waiting [`AT_LEAST`] or longer.
async fn waits(c: &Client) -> Result<Vec<String>, tokio_postgres::Error> {
    let rows = c
        .query(
            "SELECT w.pid, left(w.query, 120), \
               extract(epoch FROM now() - (SELECT min(l.waitstart) FROM pg_locks l WHERE l.pid = w.pid AND NOT l.granted))::float8, \
               coalesce((SELECT string_agg(DISTINCT l.relation::regclass::text, ', ') FROM pg_locks l WHERE l.pid = w.pid AND NOT l.granted AND l.relation IS NOT NULL), l_other.kind), \
               b.pid, coalesce(b.usename::text, ''), coalesce(b.application_name, ''), coalesce(b.state, ''), \
               coalesce(extract(epoch FROM now() - b.xact_start)::float8, 0), left(coalesce(b.query, ''), 120) \
             FROM pg_stat_activity w \
             CROSS JOIN LATERAL unnest(pg_blocking_pids(w.pid)) AS bp(pid) \
             JOIN pg_stat_activity b ON b.pid = bp.pid \
             CROSS JOIN LATERAL (SELECT coalesce(string_agg(DISTINCT l.locktype, ', '), 'a lock') AS kind FROM pg_locks l WHERE l.pid = w.pid AND NOT l.granted) l_other \
             WHERE w.datname = current_database() AND w.pid <> pg_backend_pid() \
               AND w.application_name = current_setting('application_name') AND w.wait_event_type = 'Lock'",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let waited: Option<f64> = r.get(2);
            let waited = waited.unwrap_or(0.0);
            (waited >= AT_LEAST).then(|| {
                let (pid, query, what): (i32, String, Option<String>) = (r.get(0), r.get(1), r.get(3));
                let (bpid, user, app, state, xact, bquery): (i32, String, String, String, f64, String) =
                    (r.get(4), r.get(5), r.get(6), r.get(7), r.get(8), r.get(9));
                format!(
                    "Session {pid} has waited {waited:.0} s for a lock on {} (`{query}`), held by session {bpid} \
                     (user {user}, application '{app}', {state}, its transaction open {xact:.0} s, last query `{bquery}`): \
                     end that transaction, or stop it with SELECT pg_terminate_backend({bpid})",
                    what.unwrap_or_else(|| "a lock".into())
                )
            })
        })
        .collect())
}
