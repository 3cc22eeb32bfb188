//! The accept workers: the decode and feature work of a group, spread over the cores.
//!
//! Each worker owns the accept state (decoders, feature extractors) of the sources routed to
//! it by a hash of the source name, so a source's messages are accepted one after another, in
//! arrival order, always by the same worker, and no state is shared but the velocity history.
//! The pipeline thread hands each worker its share of a group and gets the results back by
//! position, so the commit stage sees them in arrival order. Jobs queue per worker, so the next
//! group can be handed out while the previous one is being committed. With one worker,
//! accepting runs on the pipeline thread itself.

use std::hash::{Hash, Hasher};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::thread::JoinHandle;

use arrow::record_batch::RecordBatch;
use flowdaq_connectors::transport::Inbound;
use flowdaq_schemas::{Header, Table};

use super::accept::{AcceptContext, Accepted, Acceptor, SeqKey};
use crate::config::FeaturesConfig;
use crate::features::{FeatureError, FeatureExtractors};

/// A screened message and its position in its group.
pub(super) struct Ready {
    pub position: usize,
    pub message: Inbound,
    pub header: Header,
    pub key: SeqKey,
}

enum Job {
    Accept(Vec<Ready>),
    Finish,
}

enum Done {
    Accepted(Vec<(usize, Accepted)>),
    Finished(Vec<(Table, RecordBatch)>),
}

struct Worker {
    jobs: Sender<Job>,
    results: Receiver<Done>,
    thread: Option<JoinHandle<()>>,
}

enum Shards {
    Inline(Box<Acceptor>),
    Threads(Vec<Worker>),
}

/// The accept workers; see the module doc.
pub(super) struct AcceptPool {
    shards: Shards,
}

/// A group handed to the workers, not collected yet.
pub(super) struct Handed {
    /// Workers that got a job, and how many messages each.
    jobs: Vec<usize>,
    /// Results of the inline worker.
    inline: Vec<(usize, Accepted)>,
}

impl AcceptPool {
    /// `workers` acceptors (at least one), sharing one velocity history.
    ///
    /// # Errors
    /// [`FeatureError`] if the feature options are refused; the OS error as
    /// [`FeatureError::Missing`] if a thread cannot start.
    pub(super) fn new(
        context: &AcceptContext,
        features: &FeaturesConfig,
        workers: usize,
    ) -> Result<AcceptPool, FeatureError> {
        let velocity = FeatureExtractors::shared_velocity(features);
        if workers <= 1 {
            let extractors = FeatureExtractors::sharing(features, &velocity)?;
            let acceptor = Acceptor::new(context.clone(), extractors);
            return Ok(AcceptPool {
                shards: Shards::Inline(Box::new(acceptor)),
            });
        }
        let mut threads = Vec::with_capacity(workers);
        for index in 0..workers {
            let extractors = FeatureExtractors::sharing(features, &velocity)?;
            let mut acceptor = Acceptor::new(context.clone(), extractors);
            let (jobs, job_rx) = channel::<Job>();
            let (done_tx, results) = channel::<Done>();
            let thread = std::thread::Builder::new()
                .name(format!("flowdaq-accept-{index}"))
                .spawn(move || {
                    for job in job_rx {
                        let done = match job {
                            Job::Accept(ready) => Done::Accepted(
                                ready
                                    .into_iter()
                                    .map(|r| {
                                        (r.position, acceptor.accept(r.message, r.header, r.key))
                                    })
                                    .collect(),
                            ),
                            Job::Finish => Done::Finished(acceptor.finish_all()),
                        };
                        if done_tx.send(done).is_err() {
                            break;
                        }
                    }
                })
                .map_err(|e| FeatureError::Missing(format!("accept worker: {e}")))?;
            threads.push(Worker {
                jobs,
                results,
                thread: Some(thread),
            });
        }
        Ok(AcceptPool {
            shards: Shards::Threads(threads),
        })
    }

    /// Starts accepting `ready` messages; [`AcceptPool::collect`] returns the results. With one
    /// worker the work is done here.
    pub(super) fn hand_out(&mut self, ready: Vec<Ready>) -> Handed {
        match &mut self.shards {
            Shards::Inline(acceptor) => Handed {
                jobs: Vec::new(),
                inline: ready
                    .into_iter()
                    .map(|r| (r.position, acceptor.accept(r.message, r.header, r.key)))
                    .collect(),
            },
            Shards::Threads(workers) => {
                let mut shares: Vec<Vec<Ready>> = (0..workers.len()).map(|_| Vec::new()).collect();
                for r in ready {
                    let shard = shard_of(&r.header.source, workers.len());
                    shares[shard].push(r);
                }
                let mut jobs = vec![0; workers.len()];
                for (index, share) in shares.into_iter().enumerate() {
                    if share.is_empty() {
                        continue;
                    }
                    jobs[index] = share.len();
                    if workers[index].jobs.send(Job::Accept(share)).is_err() {
                        tracing::error!(worker = index, "accept worker stopped");
                        jobs[index] = 0;
                    }
                }
                Handed {
                    jobs,
                    inline: Vec::new(),
                }
            }
        }
    }

    /// Waits for a handed-out group's results; they are in position order.
    pub(super) fn collect(&mut self, handed: Handed) -> Vec<(usize, Accepted)> {
        let mut out = handed.inline;
        if let Shards::Threads(workers) = &mut self.shards {
            for (index, count) in handed.jobs.into_iter().enumerate() {
                if count == 0 {
                    continue;
                }
                match workers[index].results.recv() {
                    Ok(Done::Accepted(results)) => out.extend(results),
                    Ok(Done::Finished(_)) | Err(_) => {
                        tracing::error!(
                            worker = index,
                            "accept worker stopped; its messages are lost"
                        )
                    }
                }
            }
        }
        out.sort_unstable_by_key(|(position, _)| *position);
        out
    }

    /// Rows of every worker's windows still open (the server is stopping).
    pub(super) fn finish_all(&mut self) -> Vec<(Table, RecordBatch)> {
        match &mut self.shards {
            Shards::Inline(acceptor) => acceptor.finish_all(),
            Shards::Threads(workers) => {
                let mut rows = Vec::new();
                for worker in workers.iter() {
                    let _ = worker.jobs.send(Job::Finish);
                }
                for worker in workers.iter() {
                    if let Ok(Done::Finished(more)) = worker.results.recv() {
                        rows.extend(more);
                    }
                }
                rows
            }
        }
    }
}

impl Drop for AcceptPool {
    fn drop(&mut self) {
        if let Shards::Threads(workers) = &mut self.shards {
            for worker in workers.iter_mut() {
                // Closing the job channel ends the worker's loop.
                let (closed, _) = channel();
                worker.jobs = closed;
                if let Some(thread) = worker.thread.take() {
                    let _ = thread.join();
                }
            }
        }
    }
}

/// The worker of a source: a hash of its name.
fn shard_of(source: &str, workers: usize) -> usize {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    source.hash(&mut hasher);
    (hasher.finish() % workers as u64) as usize
}
