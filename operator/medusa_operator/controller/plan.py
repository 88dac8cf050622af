"""The revision state machine, as a pure function.

``plan(ctx, generation, status, observed)`` compares the desired revision with what exists and
returns the next actions: manifests to apply, objects to delete, and the new status. It is
level-triggered: it never relies on having seen an event, so a restart, a missed event or a child
deleted by hand converges on the next pass. The handlers (handlers.py) only read, call this,
apply and write.

Flow of a candidate revision: build (an engine another status knows is reused at once; else a
CPU-only Job looks it up in the store, and only a miss starts the GPU build Job) and, when the
spec asks for a baseline, the base model's own build the same way -> package -> candidate (and
baseline) Deployment and Service -> validate Job -> promote -> Serving.
A failed step marks the revision failed; the previous revision keeps serving.

Promotion never lowers capacity: the candidate is scaled to the serving revision's replica count
and only once that many pods are Ready do the stable Service and the autoscaler move to it; the
previous revision then drains for ``rollout.drainSeconds`` before it goes. When the cluster
cannot fit both revisions at full size, the hand-over rolls: one replica of the previous revision
goes for each candidate replica that becomes Ready, the stable Service selecting both meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from medusa_common.contract import BuildResult, ErrorKind, PackageResult, StepResult, ValidateResult

from .. import config
from ..api.v1alpha1 import (EngineStatus, FailedThreshold, MedusaModelStatus, RevisionsStatus, TopicStatus,
                            ValidationStatus)
from ..images import built_engine_refusal, image_refusal
from ..render import autoscaling, jobs, names, recorded, serving
from ..render.context import RenderContext, engine_uri
from ..revision import base_engine_cache_key, engine_cache_key, revision_of
from . import status as st
from .observed import JobObs, Observed

# The EngineBuilt reason when the builder and serving images cannot give a servable engine.
INCOMPATIBLE_IMAGES = "IncompatibleImages"
MAX_RETRY_DOUBLINGS = 5  # infrastructure retries wait at most 2**5 = 32 times --infra-retry-seconds


@dataclass(frozen=True)
class Deletion:
    api_version: str
    kind: str
    name: str


@dataclass
class Plan:
    status: MedusaModelStatus
    apply: list[dict[str, Any]] = field(default_factory=list)
    delete: list[Deletion] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)  # facts for the operator's metrics
    # Deployment name -> replicas, set on its own before ``apply`` (config.REPLICAS_FIELD_MANAGER):
    # the count an autoscaler takes over, or the size of a revision that is no longer rendered.
    replicas: dict[str, int] = field(default_factory=dict)
    forget_engines: list[tuple[str, str, str]] = field(default_factory=list)  # known engines the store lacks
    # Seconds until a deadline or wait of this pass ends (no watch event announces that): the
    # reconciler looks at the model again then. None: only events (and the slow resync) matter.
    revisit_after: float | None = None


def known_engine_key(ctx: RenderContext, cache_key: str) -> tuple[str, str, str]:
    """Where an engine the operator remembers is: namespace, artifact store and cache key. The
    same store URI can mean another endpoint and other credentials in another namespace, so an
    engine is handed only to models of the namespace and store it was built or found in."""
    return (ctx.model.namespace, ctx.spec.artifacts.uri.rstrip("/"), cache_key)


class _Planner:
    def __init__(self, ctx: RenderContext, generation: int, old: MedusaModelStatus, observed: Observed) -> None:
        self.ctx = ctx
        self.generation = generation
        self.obs = observed
        self.now = observed.now
        self.old = old
        self.status = old.model_copy(deep=True)
        self.plan = Plan(status=self.status)
        self.model = ctx.model.name
        self.revision = revision_of(ctx.spec, ctx.builder_image, ctx.serving_image)
        self.hold_serving: int | None = None  # replicas the served revision keeps during a rolling hand-over
        self.promoted: recorded.Record | None = None  # what the revision promoted in this pass was validated with
        self.unrecorded: str | None = None  # a served revision that cannot be rendered: nothing records it
        self.retired: str | None = None  # the previous revision, retired in this pass after its drain
        self.from_memory: dict[str, str] = {}  # cache key -> URI of engines handed over from known_engines
        self.secrets_held: list[str] = []  # Secrets the served revision mounts that are missing

    # -- helpers ---------------------------------------------------------------------------

    def revisit_in(self, seconds: float) -> None:
        """Something changes by itself in ``seconds`` (a wait or a deadline ends)."""
        seconds = max(seconds, 0.0)
        if self.plan.revisit_after is None or seconds < self.plan.revisit_after:
            self.plan.revisit_after = seconds

    def cond(self, type_: str, value: bool | None, reason: str, message: str) -> None:
        st.set_condition(self.status, type_, value, reason, message, generation=self.generation, now=self.now,
                         before=self.old)

    def job(self, manifest: dict[str, Any]) -> JobObs | None:
        """The observed Job for a manifest; applies the manifest when the Job does not exist yet."""
        name = manifest["metadata"]["name"]
        seen = self.obs.jobs.get(name)
        if seen is None:
            self.plan.apply.append(manifest)
        return seen

    def delete_revision_objects(self, revision: str, *, keep_jobs: bool = False,
                                variants: tuple[str, ...] = names.VARIANTS) -> None:
        for dep in self.obs.deployments.values():
            if dep.revision == revision and dep.variant in variants:
                self.plan.delete.append(Deletion("apps/v1", "Deployment", dep.name))
        for svc, svc_revision in self.obs.services.items():
            if svc_revision == revision and any(svc == names.revision_service_name(self.model, revision, v)
                                                for v in variants):
                self.plan.delete.append(Deletion("v1", "Service", svc))
        if not keep_jobs:
            for job in self.obs.jobs.values():
                if job.revision == revision:
                    self.plan.delete.append(Deletion("batch/v1", "Job", job.name))

    def fail(self, condition: str, reason: str, message: str) -> None:
        """Mark the candidate revision failed; whatever serves today keeps serving."""
        rev = self.revision
        self.cond(condition, False, reason, message)
        revs = self.status.revisions
        revs.failed = rev
        revs.retry_token = self.obs.retry_token
        revs.candidate = None
        revs.promotion_replicas = revs.promotion_since = revs.rolling_handover = None
        revs.serving_scaled_down = None  # scaled back in this pass if it made room or was handing over
        self.hold_serving = None
        self.delete_revision_objects(rev, keep_jobs=True)
        # Finished Jobs stay for inspection; ones still running (a GPU build) are stopped.
        self.plan.delete += [Deletion("batch/v1", "Job", j.name) for j in self.obs.jobs.values()
                             if j.revision == rev and j.state == "running"]
        serving_now = self.status.revisions.current is not None
        self.status.phase = "Degraded" if serving_now else "Failed"
        what = "the previous revision keeps serving" if serving_now else "nothing is serving"
        self.status.message = f"revision {rev} failed: {message}; {what}"

    # -- the pass --------------------------------------------------------------------------

    def run(self) -> Plan:
        self.status.observed_generation = self.generation
        self.recover_served_revision()
        refused = self.refused_images()
        if refused:
            self.maintain_serving()
            self.finish_status()
            self.status.phase = "Degraded" if self.status.revisions.current else "Failed"
            self.status.message = refused
            return self.plan
        if not self.check_secrets():
            self.maintain_serving()
            self.finish_status()
            return self.plan
        current = self.status.revisions.current
        if self.revision in (current, self.status.revisions.failed):
            self.status.revisions.serving_scaled_down = None  # no candidate in flight needs the room
        self.retire_previous()
        if self.revision == current:
            self.status.revisions.candidate = None
            self.clean_other_revisions(keep={current})
            self.status.message = f"serving revision {current}"
        elif self.revision == self.status.revisions.failed and self.retry_requested():
            self.clean_other_revisions(keep={current})
        elif self.revision == self.status.revisions.failed:
            self.clean_other_revisions(keep={current, self.revision}, keep_jobs_of={self.revision})
            self.status.revisions.candidate = None
            self.status.phase = "Degraded" if current else "Failed"
        else:
            self.advance_candidate()
        # Last, once the candidate's steps decided how the served revision must look in this pass.
        self.maintain_serving(self.hold_serving)
        self.finish_status()
        return self.plan

    def refused_images(self) -> str | None:
        """Why the operator's image policy refuses this spec's images (None when it allows them);
        checked before any Job or Deployment of the revision is created."""
        allowed = self.ctx.config.allowed_images
        if not allowed:
            st.remove_condition(self.status, st.IMAGE_ALLOWED)
            return None
        spec = self.ctx.spec
        reference = spec.engine.backend == "reference"
        images = [("engine.builderImage" if spec.engine.builder_image else
                   "the operator's --reference-builder-image" if reference else "the operator's --builder-image",
                   self.ctx.builder_image),
                  ("serving.image" if spec.serving.image else
                   "the operator's --reference-serving-image" if reference else "the operator's --serving-image",
                   self.ctx.serving_image)]
        refused = [f"{where} '{image}'" for where, image in images if not config.image_allowed(image, allowed)]
        if not refused:
            self.cond(st.IMAGE_ALLOWED, True, "Allowed", "the builder and serving images pass the image policy")
            return None
        message = (f"the operator's image policy does not allow {' and '.join(refused)} (allowed: "
                   f"{', '.join(allowed)}): use images under those prefixes or pinned to those digests, or ask the "
                   "operator's administrators to allow them; nothing of this revision is created")
        self.cond(st.IMAGE_ALLOWED, False, "ImageNotAllowed", message)
        return message

    def recover_served_revision(self) -> None:
        """Status can be lost (a restore, a GitOps tool replacing the object, a schema change).
        Before anything is deleted, the served revision is found again from the children: a
        Deployment that records what it was validated with was promoted; the one the stable
        Service selects (else the one with most Ready pods) serves, another with Ready pods drains."""
        revs = self.status.revisions
        if revs.current is not None:
            return
        promoted = sorted((d for d in self.obs.deployments.values() if d.variant == "medusa" and d.record is not None),
                          key=lambda d: (d.revision != self.obs.stable_revision, -d.ready_replicas, d.name))
        if not promoted:
            return
        served = promoted[0]
        revs.current = served.revision
        revs.current_repository_uri = served.record.repository_uri
        revs.current_image = served.record.spec.serving.image
        if revs.candidate == served.revision:
            revs.candidate = None
        others = [d for d in promoted[1:] if d.ready_replicas > 0]
        if others and not revs.retiring:
            revs.retiring = others[0].revision
            revs.retire_after = st.rfc3339(self.now + timedelta(seconds=self.ctx.spec.rollout.drain_seconds))
        self.plan.metrics["recovered"] = served.revision
        self.status.message = f"serving revision {served.revision} found again from its Deployment (status was lost)"

    def retry_requested(self) -> bool:
        """A new value of the medusa.dev/retry annotation retries the failed revision: its Jobs
        (kept for inspection) go in this pass, and the next pass starts it again from the lookup."""
        revs = self.status.revisions
        token = self.obs.retry_token
        if token is None or token == revs.retry_token:
            return False
        revs.failed, revs.retry_token, revs.infra_retries = None, token, None
        self.plan.metrics["retried"] = self.revision
        self.status.phase = "Pending"
        self.status.message = f"revision {self.revision} is retried ({names.RETRY_ANNOTATION}={token})"
        return True

    def check_secrets(self) -> bool:
        """Whether the candidate's work may go on: every Secret the spec names exists. A missing
        Secret the served revision mounts also holds that revision as it is (``secrets_held``)."""
        missing = set(self.obs.missing_secrets)
        current = self.status.revisions.current
        served = set(self.served_record(current).secret_names()) if current and self.served_record(current) else set()
        live = set(jobs.secret_names(self.ctx))
        self.secrets_held = sorted(missing & served)
        blocking = sorted(missing & live)
        if not (missing & (served | live)):
            if live or served:
                self.cond(st.CREDENTIALS_FOUND, True, "SecretsFound", "every referenced credentials Secret exists")
            else:
                st.remove_condition(self.status, st.CREDENTIALS_FOUND)
            return True
        listed = ", ".join(f"'{m}'" for m in sorted(missing & (served | live)))
        message = (f"credentials Secret {listed} not found in namespace '{self.ctx.model.namespace}': create it "
                   "(keys: HF_TOKEN for hf://, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for s3://); "
                   "the operator retries and continues on its own")
        if self.secrets_held:
            message += (f". Revision {current} keeps serving with the pods it has, but new pods could not mount "
                        f"{', '.join(repr(m) for m in self.secrets_held)}: its Deployment is left as it is and "
                        "scale-up is held until the Secret is back")
        self.cond(st.CREDENTIALS_FOUND, False, "SecretNotFound", message)
        if current is None:
            self.status.phase = "Pending"
        self.status.message = f"waiting for credentials Secret {listed}"
        return not blocking

    def maintain_serving(self, fixed_replicas: int | None = None) -> None:
        """Keep the served revision's objects as the spec says (replicas, resources, autoscaler).

        ``fixed_replicas`` holds it at that count without its autoscaler, during a rolling
        hand-over, when the stable Service selects the validated pods of both revisions; while it
        makes room for the candidate it sits at zero.
        """
        revs = self.status.revisions
        rev = revs.current
        if rev is None:
            return
        making_room = bool(revs.serving_scaled_down and self.ctx.spec.rollout.make_room)
        revs.serving_scaled_down = making_room or None
        if making_room:
            fixed_replicas = 0
        auto = autoscaling.autoscaler(self.ctx, rev)
        if fixed_replicas is not None:
            replicas = fixed_replicas
        else:
            replicas = None if auto is not None else self.spec_replicas()
        name = names.deployment_name(self.model, rev)
        if fixed_replicas is None and revs.restore_replicas is not None:
            # Back from making room: the count it had, not the Deployment default of 1.
            if auto is not None and name in self.obs.deployments:
                self.plan.replicas[name] = revs.restore_replicas
            revs.restore_replicas = None
        record = self.served_record(rev)
        if self.secrets_held:
            pass  # a changed template or count would start pods into a mount failure: left as it is
        elif record is not None:
            self.plan.apply.append(recorded.served_deployment(self.ctx, record, rev, replicas=replicas))
        else:
            self.unrecorded = rev  # left as it is: rendering it from today's spec would run unvalidated inputs
        self.plan.apply.append(serving.revision_service(self.ctx, rev))
        stable = serving.stable_service(self.ctx, rev)
        if fixed_replicas is not None and not making_room:
            del stable["spec"]["selector"][names.LABEL_REVISION]  # the rolling hand-over's pods too
        self.plan.apply.append(stable)
        if auto is not None and self.secrets_held and fixed_replicas is None:
            auto = self.hold_autoscaler(auto, name)
        self.apply_autoscaler(None if fixed_replicas is not None else auto)
        if auto is not None and self.secrets_held and fixed_replicas is None:
            self.cond("AutoscalerReady", False, "CredentialsMissing",
                      f"scale-up is held at {auto['spec'].get('maxReplicas', auto['spec'].get('maxReplicaCount'))} "
                      f"replica(s) while Secret {', '.join(repr(m) for m in self.secrets_held)} is missing: new "
                      "pods could not mount it")
        elif making_room and auto is not None:
            self.cond("AutoscalerReady", False, "MakingRoom",
                      f"revision {rev} is scaled to zero while candidate {self.revision} takes its GPUs")
        elif fixed_replicas is not None and auto is not None:
            self.cond("AutoscalerReady", False, "RollingHandover",
                      f"revision {rev} is held at {fixed_replicas} replica(s) while it hands over to "
                      f"candidate {self.revision}; the autoscaler follows the promoted revision")

    def serves(self, rev: str) -> bool:
        """Whether ``rev`` has a promoted Deployment with Ready pods."""
        dep = self.obs.deployments.get(names.deployment_name(self.model, rev))
        return dep is not None and dep.record is not None and dep.ready_replicas > 0

    def hold_autoscaler(self, auto: dict[str, Any], deployment: str) -> dict[str, Any]:
        """The autoscaler, unable to add pods: its most is what the Deployment has now."""
        dep = self.obs.deployments.get(deployment)
        now = max((dep.replicas or 0, dep.ready_replicas) if dep is not None else (0,)) or 1
        held = {**auto, "spec": dict(auto["spec"])}
        low, high = ("minReplicas", "maxReplicas") if auto["kind"] == "HorizontalPodAutoscaler" else \
            ("minReplicaCount", "maxReplicaCount")
        held["spec"][high] = now
        held["spec"][low] = min(held["spec"][low], now)
        return held

    def served_record(self, rev: str) -> recorded.Record | None:
        """What the served revision was validated with: recorded on its Deployment (by the pass
        that promoted it), or today's spec when it is that very revision."""
        if self.promoted is not None and rev == self.revision:
            return self.promoted
        dep = self.obs.deployments.get(names.deployment_name(self.model, rev))
        if dep is not None and dep.record is not None:
            return dep.record
        if rev == self.revision:
            return recorded.record(self.ctx, self.status.revisions.current_repository_uri or "")
        return None

    def spec_replicas(self) -> int:
        """Replicas of a revision without an autoscaler (and the least with one)."""
        return max(self.ctx.spec.serving.autoscaling.min_replicas, 1)

    def serving_replica_count(self) -> int:
        """How many replicas serve today: the count a candidate must reach before it takes over."""
        auto = self.ctx.spec.serving.autoscaling
        if not autoscaling.autoscaling_enabled(self.ctx):
            return self.spec_replicas()
        revs = self.status.revisions
        if revs.restore_replicas is not None:
            seen = revs.restore_replicas
        else:
            dep = self.obs.deployments.get(names.deployment_name(self.model, revs.current or ""))
            seen = max(dep.replicas or 0, dep.ready_replicas) if dep is not None else 0
            seen = max(seen, self.obs.autoscaler_desired or 0)
        return min(max(seen, self.spec_replicas()), auto.max_replicas)

    def apply_autoscaler(self, auto: dict[str, Any] | None) -> None:
        name = names.autoscaler_name(self.model)
        wanted_kind = auto["kind"] if auto else None
        for kind, seen_name in self.obs.autoscalers.items():
            if kind != wanted_kind:
                api = "autoscaling/v2" if kind == "HorizontalPodAutoscaler" else "keda.sh/v1alpha1"
                self.plan.delete.append(Deletion(api, kind, seen_name))
        if auto is None:
            return
        if auto["kind"] == "ScaledObject" and not self.obs.keda_available:
            self.cond("AutoscalerReady", False, "KedaNotInstalled",
                      "serving.autoscaling.provider is keda but the cluster has no keda.sh ScaledObject API: "
                      "install KEDA or use provider: hpa")
            return
        self.plan.apply.append(auto)
        self.cond("AutoscalerReady", True, "Applied", f"{auto['kind']} {name} scales on tokens per second")

    def clean_other_revisions(self, keep: set[str | None], keep_jobs_of: set[str] = frozenset()) -> None:
        """Delete what belongs to revisions that are neither kept nor in flight.

        Jobs of a failed revision stay for inspection (``keep_jobs_of``), and so do the served
        revision's finished Jobs (how it was built and validated, their pods Completed): they go
        with the revision when it retires. The served revision no longer needs its baseline.
        """
        kept = {r for r in keep if r}
        if self.status.revisions.retiring:
            kept.add(self.status.revisions.retiring)  # drains first (retire_previous)
        previous = self.status.revisions.previous
        if self.ctx.spec.rollout.keep_previous_revision and previous:
            kept.add(previous)
        seen = ({d.revision for d in self.obs.deployments.values()} | set(self.obs.services.values())
                | {j.revision for j in self.obs.jobs.values()})
        for rev in sorted(seen - kept - {""}):
            if self.serves(rev) and rev != self.retired:
                # Promoted and Ready, but status does not know it: it drains like any previous revision.
                if not self.status.revisions.retiring:
                    self.status.revisions.retiring = rev
                    self.status.revisions.retire_after = st.rfc3339(
                        self.now + timedelta(seconds=self.ctx.spec.rollout.drain_seconds))
                continue
            self.delete_revision_objects(rev)
        current = self.status.revisions.current
        if current is not None and current not in keep_jobs_of:
            self.delete_revision_objects(current, keep_jobs=True, variants=("base",))

    # -- the candidate ---------------------------------------------------------------------

    def advance_candidate(self) -> None:
        rev, revs = self.revision, self.status.revisions
        if revs.candidate != rev:
            if revs.candidate is not None:
                self.plan.metrics["superseded"] = revs.candidate
            self.status.revisions = RevisionsStatus(
                current=revs.current, previous=revs.previous, current_repository_uri=revs.current_repository_uri,
                current_image=revs.current_image, retiring=revs.retiring, retire_after=revs.retire_after,
                restore_replicas=revs.restore_replicas, candidate=rev, candidate_since=st.rfc3339(self.now))
            self.status.engine = EngineStatus()
            for type_ in st.STEP_CONDITIONS + (st.CANDIDATE_SCHEDULABLE, st.CANDIDATE_READY):
                st.remove_condition(self.status, type_)
        self.clean_other_revisions(keep={revs.current, rev}, keep_jobs_of={rev})
        refusal = image_refusal(self.ctx)
        if refusal is not None:  # before any Job: a build whose engine cannot be served wastes GPU hours
            self.fail(st.ENGINE_BUILT, INCOMPATIBLE_IMAGES, refusal)
            return
        baseline = self.ctx.spec.validation.baseline == "base-engine"

        # The candidate's and the baseline's steps run side by side; once either fails, the
        # revision has failed and nothing else may touch phase or conditions in this pass.
        engine = self.step_build()
        base_engine = self.step_build_base() if baseline and not self.failed() else None
        if self.failed() or engine is None or (baseline and base_engine is None):
            return
        repo = self.step_package(engine, "medusa")
        base_repo = self.step_package(base_engine, "base") if baseline and not self.failed() else None
        if self.failed() or repo is None or (baseline and base_repo is None):
            return
        self.status.revisions.candidate_repository_uri = repo
        self.status.revisions.candidate_base_repository_uri = base_repo
        if self.status.revisions.promotion_since:
            self.promote()  # validated: the baseline is gone and the candidate is being scaled up
            return
        if not self.step_deploy(repo, base_repo):
            return
        self.step_validate(baseline)

    def failed(self) -> bool:
        return self.status.revisions.failed == self.revision

    def job_outcome(self, job: JobObs | None, condition: str, running_reason: str, phase: str,
                    what: str) -> StepResult | None:
        """The result of a finished step, or None while it runs (the phase says so) or failed."""
        if job is None or job.state == "running":
            self.status.phase = phase
            self.cond(condition, False, running_reason, f"{what} is running")
            if job is not None and job.unschedulable is not None:
                self.cond(condition, False, "Waiting", f"{what} waits for a node: {job.unschedulable.message}")
            if job is not None and job.pod_problem is not None:
                self.cond(condition, False, job.pod_problem.reason, f"{what} cannot run: {job.pod_problem.message}")
            self.status.message = f"revision {self.revision}: {what} is running"
            return None
        if job.state == "failed" and job.result is not None and job.result.error_kind == ErrorKind.INFRASTRUCTURE:
            self.retry_later(job, condition, what)
            self.status.phase = phase
            return None
        if job.state == "failed":
            if job.result is not None:
                message = job.result.error_message or "the step failed without a message"
            else:
                message = job.problem or "the step failed"
            self.fail(condition, f"{running_reason}Failed", f"{what} failed: {message}")
            return None
        return job.result

    def retry_later(self, job: JobObs, condition: str, what: str) -> None:
        """Infrastructure failures (store or network down) are retried: the Job is run again later,
        with exponential backoff over the candidate's retries (capped at 32x the base delay)."""
        retries = self.status.revisions.infra_retries or 0
        delay = self.ctx.config.infra_retry_seconds * 2 ** min(retries, MAX_RETRY_DOUBLINGS)
        waited = (self.now - job.finished_at).total_seconds() if job.finished_at else delay
        at = st.rfc3339(self.now + timedelta(seconds=max(delay - waited, 0)))
        self.cond(condition, False, "RetryingAfterInfrastructureError",
                  f"{what} failed for a reason outside the spec and is retried "
                  f"(at {at}): {job.result.error_message}")
        self.status.message = f"revision {self.revision}: {what} will be retried: {job.result.error_message}"
        if waited >= delay:
            self.plan.delete.append(Deletion("batch/v1", "Job", job.name))
            self.status.revisions.infra_retries = retries + 1
        else:
            self.revisit_in(delay - waited)

    def engine_outcome(self, key: str, lookup: dict[str, Any], build: dict[str, Any],
                       what: str) -> BuildResult | None:
        """The result for the engine ``key``: known from a status (no Job at all), found in the
        store by a CPU-only lookup Job, or built by the GPU Job, created only when the lookup
        misses, so an engine already in the store never waits for a GPU."""
        if build["metadata"]["name"] not in self.obs.jobs:
            known = self.obs.known_engines.get(known_engine_key(self.ctx, key))
            if known is not None and known.uri and lookup["metadata"]["name"] not in self.obs.jobs:
                self.from_memory[key] = known.uri
                return BuildResult(cache_key=key, cache_hit=True, engine_uri=known.uri, num_heads=known.num_heads,
                                   num_layers=known.num_layers, tree_size=known.tree_size)
            found = self.job_outcome(self.job(lookup), st.ENGINE_BUILT, "Building", "Building",
                                     f"the store lookup for {what}")
            if found is None:
                return None
            looked_up = found.typed(BuildResult)
            if looked_up.cache_hit:
                return looked_up
        built = self.job_outcome(self.job(build), st.ENGINE_BUILT, "Building", "Building", what)
        return built.typed(BuildResult) if built is not None else None

    def step_build(self) -> str | None:
        key = engine_cache_key(self.ctx.spec, self.ctx.builder_image)
        result = self.engine_outcome(key, jobs.lookup_job(self.ctx, self.revision, key),
                                     jobs.build_job(self.ctx, self.revision, key), "the engine build")
        if result is None:
            return None
        if result.cache_hit and self.status.engine.cache_key == key and result.num_heads is None:
            result = replace(result, num_heads=self.status.engine.num_heads, num_layers=self.status.engine.num_layers,
                             tree_size=self.status.engine.tree_size,
                             tensorrt_llm_version=self.status.engine.tensorrt_llm_version)
        uri = result.engine_uri or engine_uri(self.ctx, key)
        reused = bool(result.cache_hit)
        self.status.engine = EngineStatus(
            cache_key=result.cache_key or key, uri=uri, reused=reused,
            build_seconds=result.build_seconds, num_heads=result.num_heads,
            num_layers=result.num_layers, tree_size=result.num_nodes,
            tensorrt_llm_version=result.tensorrt_llm_version)
        refusal = built_engine_refusal(self.ctx, result.tensorrt_llm_version)
        if refusal is not None:
            self.fail(st.ENGINE_BUILT, INCOMPATIBLE_IMAGES, refusal)
            return None
        self.cond(st.ENGINE_BUILT, True, "CacheHit" if reused else "Built",
                  f"engine {'reused from' if reused else 'built into'} {uri}")
        self.plan.metrics["engine"] = {"reused": reused, "seconds": result.build_seconds}
        return uri

    def step_build_base(self) -> str | None:
        key = base_engine_cache_key(self.ctx.spec, self.ctx.builder_image)
        result = self.engine_outcome(key, jobs.base_lookup_job(self.ctx, self.revision, key),
                                     jobs.base_build_job(self.ctx, self.revision, key),
                                     "the base model's engine build")
        if result is None:
            return None
        return result.engine_uri or engine_uri(self.ctx, key)

    def step_package(self, engine: str, variant: str) -> str | None:
        job = self.job(jobs.package_job(self.ctx, self.revision, engine, variant))
        what = "packaging" if variant == "medusa" else "packaging the base model"
        remembered = next((k for k, uri in self.from_memory.items() if uri == engine), None)
        if job is not None and job.state == "failed" and remembered is not None:
            # The engine came from memory, not from the store: it may be gone from there. Forget
            # it and look it up again (a lookup Job, then a build on a miss) instead of failing.
            self.plan.forget_engines.append(known_engine_key(self.ctx, remembered))
            self.plan.delete.append(Deletion("batch/v1", "Job", job.name))
            self.status.engine = EngineStatus()
            self.cond(st.PACKAGED, False, "EngineLookedUpAgain",
                      f"{what} failed on the engine {engine} known from an earlier build "
                      f"({job.result.error_message if job.result else job.problem}); it is looked up in the store again")
            self.status.phase = "Building"
            return None
        result = self.job_outcome(job, st.PACKAGED, "Packaging", "Packaging", what)
        if result is None:
            return None
        repo = result.typed(PackageResult).repository_uri
        if not repo:
            self.fail(st.PACKAGED, "PackagingFailed", f"{what} finished without a repositoryUri in its result")
            return None
        if variant == "medusa":
            self.cond(st.PACKAGED, True, "Packaged", f"Triton model repository at {repo}")
        return repo

    def step_deploy(self, repo: str, base_repo: str | None) -> bool:
        revs = self.status.revisions
        revs.deploying_since = revs.deploying_since or st.rfc3339(self.now)
        wanted = [("medusa", repo)] + ([("base", base_repo)] if base_repo else [])
        waiting: list[tuple[str, str]] = []  # (reason, sentence) per Deployment without a Ready pod
        for variant, repository in wanted:
            self.plan.apply.append(serving.deployment(self.ctx, self.revision, repository, variant=variant))
            self.plan.apply.append(serving.revision_service(self.ctx, self.revision, variant))
            dep = self.obs.deployments.get(names.deployment_name(self.model, self.revision, variant))
            if dep is not None and dep.ready_replicas >= 1:
                continue
            what = "candidate" if variant == "medusa" else "baseline"
            self.check_schedulable(dep.unschedulable if dep is not None else None)
            if dep is not None and dep.pod_problem is not None:
                waiting.append((dep.pod_problem.reason, f"{what} {dep.pod_problem.message}"))
            elif dep is not None and dep.unschedulable is not None:
                waiting.append(("Unschedulable", f"{what} pods wait for a node: {dep.unschedulable.message}"))
            else:
                waiting.append(("PodsStarting", f"{what} pods are starting"))
        if not waiting:
            self.cond(st.CANDIDATE_SCHEDULABLE, True, "Scheduled", "candidate pods are running")
            self.cond(st.CANDIDATE_READY, True, "PodsReady", "candidate pods are Ready")
            return True
        why = "; ".join(sentence for _, sentence in waiting)
        limit = self.ctx.spec.rollout.deploy_timeout_seconds
        waited = (self.now - st.parse_time(revs.deploying_since)).total_seconds()
        self.revisit_in(limit - waited)
        if waited >= limit:
            self.fail(st.CANDIDATE_READY, "DeployTimeout",
                      f"candidate pods were not Ready within rollout.deployTimeoutSeconds ({limit}s): {why}")
            return False
        deadline = st.rfc3339(st.parse_time(revs.deploying_since) + timedelta(seconds=limit))
        self.cond(st.CANDIDATE_READY, False, waiting[0][0],
                  f"{why} (the deadline is {deadline}: rollout.deployTimeoutSeconds {limit}s)")
        self.status.phase = "Deploying"
        self.status.message = f"revision {self.revision}: waiting for candidate pods to become ready: {why}"
        return False

    def promotion_timed_out(self, target: int, ready: int) -> bool:
        """A validated candidate that cannot reach the serving count in time fails; the serving
        revision keeps (or gets back) its replicas."""
        limit = self.ctx.spec.rollout.deploy_timeout_seconds
        waited = (self.now - st.parse_time(self.status.revisions.promotion_since)).total_seconds()
        if waited < limit:
            self.revisit_in(limit - waited)
            return False
        cand = self.obs.deployments.get(names.deployment_name(self.model, self.revision))
        problem = f": {cand.pod_problem.message}" if cand is not None and cand.pod_problem is not None else ""
        self.fail(st.CANDIDATE_READY, "PromotionTimeout",
                  f"the validated candidate did not reach the serving revision's {target} Ready replica(s) within "
                  f"rollout.deployTimeoutSeconds ({limit}s); {ready} were Ready{problem}")
        return True

    def check_schedulable(self, unschedulable) -> None:
        if unschedulable is None:
            return
        waited = (self.now - unschedulable.since).total_seconds()
        limit = self.ctx.spec.rollout.unschedulable_timeout_seconds
        if waited < limit:
            self.revisit_in(limit - waited)
            deadline = st.rfc3339(unschedulable.since + timedelta(seconds=limit))
            self.cond(st.CANDIDATE_SCHEDULABLE, None, "CandidatePending",
                      f"candidate pods wait for a node (until {deadline}: rollout.unschedulableTimeoutSeconds "
                      f"{limit}s): {unschedulable.message}")
            return
        current = self.status.revisions.current
        serving_note = ""
        if current and self.ctx.spec.rollout.make_room:
            if not self.status.revisions.serving_scaled_down:
                self.status.revisions.restore_replicas = self.serving_replica_count()
            self.status.revisions.serving_scaled_down = True
            serving_note = f"; serving revision {current} is scaled to zero to make room (rollout.makeRoom)"
        elif current:
            serving_note = "; the serving revision is not touched to make room unless rollout.makeRoom is set"
        self.cond(st.CANDIDATE_SCHEDULABLE, False, "Unschedulable",
                  f"candidate pods could not be scheduled within rollout.unschedulableTimeoutSeconds ({limit}s): "
                  f"{unschedulable.message}. Free GPUs "
                  f"({self.ctx.spec.engine.gpu.count} x {self.ctx.spec.engine.gpu.product or 'any product'}) "
                  f"or add nodes{serving_note}")

    def step_validate(self, baseline: bool) -> None:
        job = self.job(jobs.validate_job(self.ctx, self.revision, baseline))
        verdict = job.result.typed(ValidateResult) if job is not None and job.result is not None else ValidateResult()
        if job is not None and job.state != "running" and verdict.passed is not None:
            self.record_validation(verdict)
            if verdict.passed and job.state == "succeeded":
                self.cond(st.VALIDATED, True, "Passed", "every threshold held")
                self.promote()
            else:
                failed = "; ".join(f.message for f in self.status.validation.failures) or "the verdict was fail"
                self.fail(st.VALIDATED, "ValidationFailed", f"validation failed: {failed}")
            return
        if self.job_outcome(job, st.VALIDATED, "Validating", "Validating", "validation") is not None:
            self.fail(st.VALIDATED, "ValidationFailed", "validation finished without a verdict ('passed' is missing)")

    def record_validation(self, result: ValidateResult) -> None:
        def num(value: float | None) -> float | None:
            return float(value) if value is not None else None

        topics = [TopicStatus(topic=t.topic or "", tokens_per_second=t.tokens_per_second,
                              base_tokens_per_second=t.base_tokens_per_second, speedup=t.speedup)
                  for t in result.per_topic or []]
        failures = [FailedThreshold(threshold=f.threshold or "", measured=f.measured, required=f.required,
                                    message=f.message or "")
                    for f in result.failures or []]
        self.status.validation = ValidationStatus(
            revision=self.revision, passed=bool(result.passed), accuracy=num(result.accuracy),
            base_accuracy=num(result.base_accuracy), tokens_per_second=num(result.tokens_per_second),
            base_tokens_per_second=num(result.base_tokens_per_second), speedup=num(result.speedup),
            mean_accepted_tokens=num(result.mean_accepted_tokens), per_topic=topics, failures=failures,
            report_uri=result.report_uri)

    def promote(self) -> None:
        """Hand the stable Service and the autoscaler to the validated candidate, never lowering capacity.

        The candidate is scaled to the serving revision's replica count and takes over once that
        many of its pods are Ready. If its pods cannot be scheduled for
        ``rollout.unschedulableTimeoutSeconds``, the cluster cannot fit both revisions: the
        hand-over rolls one replica at a time (see ``rolling_handover``).
        """
        revs = self.status.revisions
        self.delete_revision_objects(self.revision, keep_jobs=True, variants=("base",))  # frees its GPUs
        revs.promotion_since = revs.promotion_since or st.rfc3339(self.now)
        if revs.current is None or revs.serving_scaled_down:
            # Nothing serves (or it made room and serves nothing): no capacity to keep, take over now.
            self.finish_promotion(revs.restore_replicas or self.spec_replicas())
            return
        if revs.promotion_replicas is None:
            revs.promotion_replicas = self.serving_replica_count()
        target = revs.promotion_replicas
        cand = self.obs.deployments.get(names.deployment_name(self.model, self.revision))
        ready = cand.ready_replicas if cand is not None else 0
        if ready < target and self.promotion_timed_out(target, ready):
            return
        if not revs.rolling_handover:
            if ready >= target:
                self.finish_promotion(target)
                return
            unschedulable = cand.unschedulable if cand is not None else None
            waited = (self.now - unschedulable.since).total_seconds() if unschedulable else 0.0
            if unschedulable is None or waited < self.ctx.spec.rollout.unschedulable_timeout_seconds:
                if unschedulable is not None:
                    self.revisit_in(self.ctx.spec.rollout.unschedulable_timeout_seconds - waited)
                self.apply_candidate(target)
                self.status.phase = "Promoting"
                self.status.message = (f"revision {self.revision} passed validation; scaling it to {target} ready "
                                       f"replica(s) ({ready} ready) before it takes the stable Service")
                return
            revs.rolling_handover = True
            revs.restore_replicas = target
            self.rolling_handover(target, ready, start=True)
            return
        self.rolling_handover(target, ready)

    def apply_candidate(self, replicas: int) -> None:
        repo = self.status.revisions.candidate_repository_uri or ""
        self.plan.apply.append(serving.deployment(self.ctx, self.revision, repo, replicas=replicas))

    def rolling_handover(self, target: int, ready: int, start: bool = False) -> None:
        """The fallback when both revisions cannot fit: each pass that finds every requested
        candidate replica Ready asks for one more and removes one of the serving revision's, so
        the stable Service (selecting both revisions meanwhile) is at most one replica short."""
        cand = self.obs.deployments.get(names.deployment_name(self.model, self.revision))
        wanted = max(ready, 1) if start or cand is None or cand.replicas is None else cand.replicas
        if ready >= wanted and wanted < target:
            wanted += 1
        old = self.obs.deployments.get(names.deployment_name(self.model, self.status.revisions.current or ""))
        old_ready = old.ready_replicas if old is not None else 0
        if wanted >= target and (ready >= target or old_ready == 0):
            self.finish_promotion(max(wanted, ready))
            return
        self.apply_candidate(wanted)
        self.hold_serving = max(target - wanted, 0)
        current = self.status.revisions.current
        self.cond(st.CANDIDATE_SCHEDULABLE, False, "RollingHandover",
                  f"the cluster cannot fit {target} replica(s) of both revisions: handing over one replica at a "
                  f"time (candidate {wanted} requested, {ready} ready; revision {current} keeps "
                  f"{max(target - wanted, 0)}); the stable Service selects both meanwhile")
        self.status.phase = "Promoting"
        self.status.message = (f"revision {self.revision} passed validation; rolling hand-over from {current}: "
                               f"{ready} of {target} candidate replica(s) ready")

    def finish_promotion(self, replicas: int) -> None:
        """The candidate becomes the served revision; the previous one drains, then goes."""
        revs = self.status.revisions
        old = revs.current
        drain = self.ctx.spec.rollout.drain_seconds
        self.status.revisions = RevisionsStatus(
            current=self.revision, previous=old, current_repository_uri=revs.candidate_repository_uri,
            current_image=self.ctx.serving_image, retiring=old,
            retire_after=st.rfc3339(self.now + timedelta(seconds=drain)) if old else None)
        self.plan.metrics["promoted"] = self.revision
        self.promoted = recorded.record(self.ctx, revs.candidate_repository_uri or "")
        name = names.deployment_name(self.model, self.revision)
        if autoscaling.autoscaling_enabled(self.ctx) and name in self.obs.deployments:
            self.plan.replicas[name] = replicas  # the autoscaler starts from here, not from 1
        if revs.rolling_handover:
            self.cond(st.CANDIDATE_SCHEDULABLE, True, "HandedOver", "the rolling hand-over finished")
        self.status.message = f"revision {self.revision} passed validation and took the stable Service" + (
            f"; revision {old} drains for {drain}s" if old else "")

    def retire_previous(self) -> None:
        """After its drain, the previous revision goes (or is scaled to zero with keepPreviousRevision)."""
        revs = self.status.revisions
        if not revs.retiring:
            return
        if revs.retire_after and self.now < st.parse_time(revs.retire_after):
            self.revisit_in((st.parse_time(revs.retire_after) - self.now).total_seconds())
            return
        old = revs.retiring
        name = names.deployment_name(self.model, old)
        if self.ctx.spec.rollout.keep_previous_revision and old == revs.previous:
            if name in self.obs.deployments:
                self.plan.replicas[name] = 0
        else:
            self.delete_revision_objects(old, keep_jobs=True)
        self.retired = old
        revs.retiring = revs.retire_after = None

    # -- summary ---------------------------------------------------------------------------

    def finish_status(self) -> None:
        s, rev = self.status, self.status.revisions.current
        if rev is None:
            s.endpoint, s.replicas = None, None
            self.cond(st.AVAILABLE, False, "NotServing", "no revision has passed validation yet")
            self.cond(st.READY, False, "NotServing", "no validated revision serves yet")
            if s.phase is None:
                s.phase = "Pending"
            return
        s.endpoint = names.endpoint(self.model, self.ctx.model.namespace)
        dep = self.obs.deployments.get(names.deployment_name(self.model, rev))
        ready = dep.ready_replicas if dep is not None else 0
        s.replicas = ready
        problem = dep.pod_problem if dep is not None else None
        if ready > 0:
            self.cond(st.AVAILABLE, True, "PodsReady", f"{ready} ready replica(s) of revision {rev}" + (
                f"; a pod is not Ready: {problem.message}" if problem is not None else ""))
            self.cond(st.READY, True, "Serving", f"{s.endpoint} serves validated revision {rev}")
        elif s.revisions.serving_scaled_down:
            why = (f"revision {rev} is scaled to zero to make room for candidate {s.revisions.candidate} "
                   "(rollout.makeRoom)")
            self.cond(st.AVAILABLE, False, "MakingRoom", why)
            self.cond(st.READY, False, "MakingRoom", why)
        elif self.unrecorded == rev and dep is None:
            why = (f"the Deployment of revision {rev} is gone and the inputs it was validated with are not recorded "
                   "anywhere else: it serves again once a candidate is promoted")
            self.cond(st.AVAILABLE, False, "ValidatedInputsLost", why)
            self.cond(st.READY, False, "ValidatedInputsLost", why)
        else:
            reason, why = (problem.reason, f": {problem.message}") if problem is not None else ("NoReadyPods", "")
            self.cond(st.AVAILABLE, False, reason, f"revision {rev} has no ready pods{why}")
            self.cond(st.READY, False, reason, f"revision {rev} has no ready pods behind {s.endpoint}{why}")
        if self.secrets_held and s.revisions.candidate is None:
            s.phase = "Degraded"
            s.message = (f"revision {rev} serves with the pods it has; credentials Secret "
                         f"{', '.join(repr(m) for m in self.secrets_held)} is missing, so no new pod can start")
            return
        candidate_busy = s.revisions.candidate is not None
        failed_now = s.revisions.failed is not None and s.revisions.failed == self.revision
        if not candidate_busy and not failed_now:
            s.phase = "Serving" if ready > 0 else ("Promoting" if s.phase == "Promoting" else "Degraded")
            if s.phase == "Degraded":
                s.message = f"revision {rev} has no ready pods" + (f": {problem.message}" if problem else "")
        elif failed_now:
            s.phase = "Degraded"


def plan(ctx: RenderContext, generation: int, old_status: MedusaModelStatus, observed: Observed) -> Plan:
    result = _Planner(ctx, generation, old_status, observed).run()
    result.apply, result.delete = _settle(result.apply, result.delete)
    return result


def _settle(apply: list[dict[str, Any]], delete: list[Deletion]) -> tuple[list[dict[str, Any]], list[Deletion]]:
    """The last manifest per object wins; nothing is both applied and deleted; no duplicates."""
    deleted = {(d.kind, d.name) for d in delete}
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for manifest in apply:
        key = (manifest["kind"], manifest["metadata"]["name"])
        if key not in deleted:
            latest.pop(key, None)
            latest[key] = manifest
    unique: dict[tuple[str, str], Deletion] = {(d.kind, d.name): d for d in delete}
    return list(latest.values()), list(unique.values())
