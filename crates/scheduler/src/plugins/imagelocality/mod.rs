//! ImageLocality: prefers nodes that already have the pod's container images, weighted by
//! image size and damped for images present on most nodes (no point steering to those).

use crate::framework::{
    CycleState, MAX_NODE_SCORE, NodeInfo, Plugin, PodInfo, PreScorePlugin, ScorePlugin, Snapshot,
    Status,
};

/// The plugin name.
pub const NAME: &str = super::names::IMAGE_LOCALITY;

const MB: i64 = 1024 * 1024;
/// Below this total (23 MiB) images make no difference.
pub const MIN_THRESHOLD: i64 = 23 * MB;
/// Per container, image bytes beyond this (1000 MiB) add nothing.
pub const MAX_CONTAINER_THRESHOLD: i64 = 1000 * MB;

/// The ImageLocality plugin.
#[derive(Debug, Default)]
pub struct ImageLocality;

/// `name` with `:latest` when it carries no tag (upstream's `normalizedImageName`).
pub fn normalized_image_name(name: &str) -> String {
    let colon = name.rfind(':').map_or(-1, |i| i as i64);
    let slash = name.rfind('/').map_or(-1, |i| i as i64);
    if colon <= slash {
        format!("{name}:latest")
    } else {
        name.to_string()
    }
}

/// The score for a sum of scaled image sizes over `containers` containers.
pub fn calculate_priority(sum: i64, containers: usize) -> i64 {
    let max = MAX_CONTAINER_THRESHOLD * containers.max(1) as i64;
    let sum = sum.clamp(MIN_THRESHOLD, max.max(MIN_THRESHOLD));
    if max <= MIN_THRESHOLD {
        return 0;
    }
    MAX_NODE_SCORE * (sum - MIN_THRESHOLD) / (max - MIN_THRESHOLD)
}

/// The pod's images (normalized, per container) and its container count.
fn pod_images(pod: &PodInfo) -> (Vec<String>, usize) {
    let Some(spec) = pod.pod.spec.as_ref() else {
        return (Vec::new(), 0);
    };
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter());
    let mut count = 0;
    let mut names = Vec::new();
    for c in containers {
        count += 1;
        if let Some(image) = c.image.as_deref() {
            names.push(normalized_image_name(image));
        }
    }
    (names, count)
}

/// The sum of the scaled sizes of `images` present on `node` (upstream's
/// `sumImageScores`: size × share of nodes with the image).
pub fn sum_image_scores(images: &[String], node: &NodeInfo, snapshot: &Snapshot<'_>) -> i64 {
    if node.images.is_empty() {
        return 0;
    }
    let total = snapshot.nodes.len().max(1) as f64;
    images
        .iter()
        .filter_map(|name| {
            let size = node.images.get(name)?;
            let spread = snapshot.image_nodes.get(name).copied().unwrap_or(1) as f64;
            Some((*size as f64 * spread / total) as i64)
        })
        .sum()
}

/// PreScore data.
#[derive(Debug, Clone)]
struct PreScoreState {
    images: Vec<String>,
    containers: usize,
}

impl Plugin for ImageLocality {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_pre_score(&self) -> Option<&dyn PreScorePlugin> {
        Some(self)
    }
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        Some(self)
    }
}

impl PreScorePlugin for ImageLocality {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _: &[&NodeInfo],
        snapshot: &Snapshot<'_>,
    ) -> Status {
        if snapshot.image_nodes.is_empty() {
            // No node reports images: every node would score 0.
            return Status::skip();
        }
        let (images, containers) = pod_images(pod);
        state.write(PreScoreState { images, containers });
        Status::success()
    }
}

impl ScorePlugin for ImageLocality {
    fn score(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        snapshot: &Snapshot<'_>,
    ) -> Result<i64, Status> {
        Ok(match state.read::<PreScoreState>() {
            Some(s) => {
                calculate_priority(sum_image_scores(&s.images, node, snapshot), s.containers)
            }
            None => {
                let (images, containers) = pod_images(pod);
                calculate_priority(sum_image_scores(&images, node, snapshot), containers)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{TestCluster, node, pod};

    #[test]
    fn names_get_latest() {
        for (name, want) in [
            ("nginx", "nginx:latest"),
            ("nginx:1.25", "nginx:1.25"),
            ("localhost:5000/app", "localhost:5000/app:latest"),
            ("localhost:5000/app:v1", "localhost:5000/app:v1"),
        ] {
            assert_eq!(normalized_image_name(name), want);
        }
    }

    #[test]
    fn bigger_local_images_score_higher() {
        let cluster = TestCluster::new(vec![
            node("none").info(),
            node("small").image(&["app:small"], 30 * MB).info(),
            node("big").image(&["app:big"], 600 * MB).info(),
            node("both")
                .image(&["app:big"], 600 * MB)
                .image(&["app:small"], 30 * MB)
                .info(),
        ]);
        let p = pod("p").image("app:big").image("app:small").info();
        let scores: Vec<i64> = cluster
            .nodes
            .iter()
            .map(|n| {
                ImageLocality
                    .score(&CycleState::new(), &p, n, &cluster.snapshot())
                    .unwrap()
            })
            .collect();
        // big: 600 MiB on 2 of 4 nodes → 300 MiB; both: 300 + 15 MiB; max 2000 MiB.
        assert_eq!(scores[0], 0);
        assert_eq!(scores[1], 0);
        assert_eq!(scores[2], 100 * (300 - 23) / (2000 - 23));
        assert_eq!(scores[3], 100 * (315 - 23) / (2000 - 23));
    }
}
