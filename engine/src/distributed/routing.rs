//! Where stages run: next to their data when its host serves, else on the queriers.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datafusion::error::{DataFusionError, Result};
use datafusion_distributed::{RouteTasksEvent, RouteTasksEventResponse, WorkerResolver};
use profusion_cluster::RingWatcher;
use profusion_model::scan::ingester_source;
use url::Url;

use super::stages::{Origin, origin_of};

/// The URL of a worker at a member's advertised address.
fn url_of(address: &str) -> Result<Url> {
    Url::parse(&format!("http://{address}"))
        .map_err(|e| DataFusionError::Internal(format!("worker address {address:?}: {e}")))
}

/// Workers that failed to answer lately, left out of routing until the ring has had time to
/// notice (a heartbeat timeout): a query retried after a querier died does not meet it again.
#[derive(Debug, Clone, Default)]
pub(super) struct Suspects(Arc<Mutex<HashMap<Url, Instant>>>);

impl Suspects {
    pub(super) fn add(&self, url: &Url) {
        self.0
            .lock()
            .expect("suspects lock")
            .insert(url.clone(), Instant::now());
    }

    /// `urls` without the suspects of the last `memory`, or all of them if none is left.
    fn avoid(&self, urls: Vec<Url>, memory: Duration) -> Vec<Url> {
        let mut suspects = self.0.lock().expect("suspects lock");
        suspects.retain(|_, since| since.elapsed() < memory);
        let trusted: Vec<Url> = urls
            .iter()
            .filter(|u| !suspects.contains_key(*u))
            .cloned()
            .collect();
        if trusted.is_empty() { urls } else { trusted }
    }
}

/// The queriers serving now, but for suspects: where stages not pinned to an ingester run.
#[derive(Debug)]
pub(super) struct QuerierUrls {
    pub(super) queriers: RingWatcher,
    pub(super) suspects: Suspects,
}

impl WorkerResolver for QuerierUrls {
    fn get_urls(&self) -> Result<Vec<Url>> {
        let urls = self
            .queriers
            .serving()
            .iter()
            .map(|m| url_of(&m.address))
            .collect::<Result<Vec<_>>>()?;
        Ok(self
            .suspects
            .avoid(urls, self.queriers.config().heartbeat_timeout))
    }
}

/// Where the stages next to the data run.
#[derive(Debug)]
pub(super) struct Routes {
    pub(super) ingesters: RingWatcher,
    pub(super) store_gateways: RingWatcher,
    pub(super) suspects: Suspects,
}

impl Routes {
    /// A stage reading one ingester's head goes to that ingester, when it serves; a stage
    /// reading blocks only, to a store-gateway chosen by its files (so each block is read,
    /// and cached, by the same one while the ring stands). Anything else (`None`), or a stage
    /// whose host does not serve, goes to the queriers.
    pub(super) fn route(&self, ev: RouteTasksEvent<'_>) -> Option<Result<RouteTasksEventResponse>> {
        let url = match origin_of(ev.plan)? {
            Origin::Head(source) => {
                let member = self
                    .ingesters
                    .serving()
                    .into_iter()
                    .find(|m| ingester_source(&m.instance) == source)?;
                url_of(&member.address)
            }
            Origin::Blocks(files) => {
                let memory = self.store_gateways.config().heartbeat_timeout;
                let serving = self
                    .store_gateways
                    .serving()
                    .iter()
                    .map(|m| Ok((m.instance.clone(), url_of(&m.address)?)))
                    .collect::<Result<Vec<_>>>();
                let serving = match serving {
                    Ok(serving) => serving,
                    Err(e) => return Some(Err(e)),
                };
                let trusted = self
                    .suspects
                    .avoid(serving.iter().map(|(_, u)| u.clone()).collect(), memory);
                let candidates = serving.into_iter().filter(|(_, u)| trusted.contains(u));
                Ok(rendezvous(&files, candidates)?)
            }
        };
        Some(url.map(|url| RouteTasksEventResponse::new(vec![url; ev.task_count])))
    }
}

/// Rendezvous hashing: the URL of the candidate (instance, URL) whose instance name hashes
/// highest with `key`, so a candidate joining or leaving moves only its own share of keys.
/// The hash is the same in every process of one build (SipHash with fixed keys); processes of
/// different builds may disagree, which costs cache locality for a while, never correctness.
fn rendezvous(key: &impl Hash, candidates: impl Iterator<Item = (String, Url)>) -> Option<Url> {
    candidates
        .max_by_key(|(instance, _)| {
            let mut hasher = DefaultHasher::new();
            (instance, key).hash(&mut hasher);
            hasher.finish()
        })
        .map(|(_, url)| url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateways(names: &[&str]) -> Vec<(String, Url)> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                (
                    (*n).to_owned(),
                    url_of(&format!("127.0.0.1:{}", 7000 + i)).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn blocks_spread_over_store_gateways_and_one_leaving_moves_only_its_own() {
        let three = gateways(&["sg-1", "sg-2", "sg-3"]);
        let two: Vec<_> = three.iter().filter(|(n, _)| n != "sg-2").cloned().collect();
        let gone = &three[1].1;
        let mut per_gateway = HashMap::new();
        for block in 0..300 {
            let files = vec![format!("t/blocks/{block}/samples.parquet")];
            let before = rendezvous(&files, three.clone().into_iter()).unwrap();
            let after = rendezvous(&files, two.clone().into_iter()).unwrap();
            assert_eq!(
                rendezvous(&files, three.clone().into_iter()).as_ref(),
                Some(&before),
                "the same choice every time"
            );
            if &before != gone {
                assert_eq!(
                    after, before,
                    "block {block} moved off a store-gateway that stayed"
                );
            }
            *per_gateway.entry(before).or_insert(0) += 1;
        }
        // Each of the three takes a fair share (300 / 3 = 100 expected).
        assert_eq!(per_gateway.len(), 3);
        assert!(per_gateway.values().all(|&n| n > 60), "{per_gateway:?}");
    }

    #[test]
    fn suspects_are_avoided_unless_nothing_else_is_left() {
        let suspects = Suspects::default();
        let urls: Vec<Url> = gateways(&["a", "b"]).into_iter().map(|(_, u)| u).collect();
        suspects.add(&urls[0]);
        assert_eq!(
            suspects.avoid(urls.clone(), Duration::from_secs(60)),
            [urls[1].clone()]
        );
        suspects.add(&urls[1]);
        assert_eq!(suspects.avoid(urls.clone(), Duration::from_secs(60)), urls);
        // Forgotten once their memory has passed.
        assert_eq!(suspects.avoid(urls.clone(), Duration::ZERO), urls);
        suspects.add(&urls[0]);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(suspects.avoid(urls.clone(), Duration::from_millis(1)), urls);
    }
}
