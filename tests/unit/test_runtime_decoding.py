"""Tree decoding on a tiny random Llama (CPU): Medusa greedy must reproduce base greedy exactly."""

from __future__ import annotations

import pytest
import torch

from medusa_common.contract import UserError
from medusa_runtime.engine.decoding import MedusaDecoder, build_tree_buffers, run_ahead
from medusa_runtime.engine.heads import MedusaHeads
from medusa_runtime.engine.model import LlamaModel
from medusa_common.tree import PRESETS
from tiny_llama import HIDDEN, VOCAB, assert_equal_but_for_cpu_rounding, random_heads, tiny_model

@pytest.fixture(scope="module")
def model() -> LlamaModel:
    return tiny_model()


def test_tree_buffers_describe_ancestors_and_paths():
    tb = build_tree_buffers([[1], [0], [0, 0], [0, 1]], torch.device("cpu"))
    # Nodes sorted by depth then path: root, [0], [1], [0, 0], [0, 1].
    assert tb.size == 5 and tb.depth == 2 and tb.topk == 2
    assert tb.depths.tolist() == [0, 1, 1, 2, 2]
    assert tb.ancestors[3].tolist() == [0, 1, 3]  # [0, 0]: root, [0], itself
    assert tb.ancestors[2].tolist() == [0, 2, 2]  # [1]: root, itself, padding
    paths = {tuple(p[v].tolist()) for p, v in zip(tb.paths, tb.path_valid)}
    assert paths == {(0, 2), (0, 1, 3), (0, 1, 4)}
    # Candidate k of node [0, 1] is head 2's rank-1 token: flat index 1 * topk + 1.
    assert tb.candidate_index.tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("tree", [
    [[0]],
    [[0], [1], [0, 0], [0, 1], [0, 0, 0]],
    [p for p in PRESETS["mc_sim_7b_63"] if len(p) <= 3],
])
def test_medusa_output_equals_base_greedy(model, tree):
    base = MedusaDecoder(model)
    medusa = MedusaDecoder(model, random_heads(3), tree)
    for seed in range(6):
        prompt = torch.randint(0, VOCAB, (5 + 3 * seed,), generator=torch.Generator().manual_seed(seed)).tolist()
        expected = base.generate(prompt, 40)
        got = medusa.generate(prompt, 40)
        assert got.tokens == expected.tokens
        depth = max(len(p) for p in tree)
        assert all(0 <= a <= depth for a in got.accepted_per_step)
        assert len(got.accepted_per_step) == got.steps
        assert got.steps <= expected.steps


def always_five_model() -> LlamaModel:
    """A model whose greedy continuation of anything is token 5, over and over."""
    model = tiny_model(seed=3, layers=1)
    direction = torch.randn(HIDDEN, generator=torch.Generator().manual_seed(4))
    model.embed[:] = direction  # every token embeds alike
    for layer in model.layers:
        layer["o"].zero_()
        layer["down"].zero_()
    model.lm_head = torch.randn(VOCAB, HIDDEN, generator=torch.Generator().manual_seed(5)) * 0.01
    model.lm_head[5] = direction
    return model


def test_predictable_text_is_accepted_in_full():
    """When the base always predicts the same token, zero-initialised heads (which predict what
    the base predicts) are always right, so every step accepts the whole chain."""
    model = always_five_model()
    heads = MedusaHeads(3, 1, HIDDEN, VOCAB, output_layer=False)
    out = MedusaDecoder(model, heads, [[0], [0, 0], [0, 0, 0], [1]]).generate([1, 2, 3], 30)
    assert out.tokens == MedusaDecoder(model).generate([1, 2, 3], 30).tokens == [5] * 30
    assert out.accepted_per_step[:-1] == [3] * (len(out.accepted_per_step) - 1)
    assert out.tokens_per_step > 3.5


def test_draft_vocabulary_limits_what_heads_propose_not_what_is_emitted():
    """Text that always continues with token 5: heads restricted to a draft vocabulary without it
    never get a draft token accepted, with it every one; the output is greedy's either way."""
    model = always_five_model()
    heads = MedusaHeads(2, 1, HIDDEN, VOCAB, output_layer=False)
    tree = [[0], [0, 0], [1]]
    greedy = MedusaDecoder(model).generate([1, 2, 3], 20).tokens
    without = MedusaDecoder(model, heads, tree, draft_tokens=torch.tensor([0, 1, 2, 3, 4, 6])).generate([1, 2, 3], 20)
    assert without.tokens == greedy and set(without.accepted_per_step) == {0}
    with_it = MedusaDecoder(model, heads, tree, draft_tokens=torch.tensor([2, 5, 7])).generate([1, 2, 3], 20)
    assert with_it.tokens == greedy and with_it.accepted_per_step[:-1] == [2] * (len(with_it.accepted_per_step) - 1)
    with pytest.raises(UserError, match="choose from 1 tokens; use smaller ranks or a larger draft vocabulary"):
        MedusaDecoder(model, heads, tree, draft_tokens=torch.tensor([5]))
    for bad in (torch.tensor([3, VOCAB]), torch.tensor([-1, 4]), torch.tensor([], dtype=torch.long)):
        with pytest.raises(UserError, match=f"non-empty list of token ids below {VOCAB}"):
            MedusaDecoder(model, heads, tree, draft_tokens=bad)


@pytest.mark.parametrize("tree", [[[0], [1], [0, 0], [0, 1]], [p for p in PRESETS["mc_sim_7b_63"] if len(p) <= 3]])
def test_medusa_with_a_draft_vocabulary_equals_base_greedy(model, tree):
    base = MedusaDecoder(model)
    draft = torch.arange(0, VOCAB, 3)
    medusa = MedusaDecoder(model, random_heads(3), tree, draft_tokens=draft)
    for seed in range(4):
        prompt = torch.randint(0, VOCAB, (6 + 2 * seed,), generator=torch.Generator().manual_seed(seed)).tolist()
        assert medusa.generate(prompt, 30).tokens == base.generate(prompt, 30).tokens


def test_kv_cache_is_compacted_to_the_accepted_path(model):
    prompt = list(range(10, 22))
    base, medusa = MedusaDecoder(model), MedusaDecoder(model, random_heads(3), [[0], [1], [0, 0], [1, 0], [0, 0, 0]])
    out_base, out_medusa = base.generate(prompt, 30), medusa.generate(prompt, 30)
    assert out_base.tokens == out_medusa.tokens
    (session_base,), (session_medusa,) = base._sessions.values(), medusa._sessions.values()
    fed = len(prompt) + len(out_base.tokens) - 1  # every emitted token but the last was fed back
    assert_equal_but_for_cpu_rounding(session_medusa.cache.k[..., :fed, :], session_base.cache.k[..., :fed, :])
    assert_equal_but_for_cpu_rounding(session_medusa.cache.v[..., :fed, :], session_base.cache.v[..., :fed, :])


def test_padded_prefill_changes_nothing(model):
    """Prompts padded to a multiple of 8 tokens (as CUDA-graphed prefills are) give the same
    tokens, and the cache below the prompt's end holds what an unpadded prefill writes."""
    tree = [[0], [1], [0, 0], [1, 0], [0, 0, 0]]
    plain, padded = MedusaDecoder(model), MedusaDecoder(model, prefill_bucket=8)
    medusa_padded = MedusaDecoder(model, random_heads(3), tree, prefill_bucket=8)
    assert [padded._prefill_rows(n) for n in (1, 8, 11)] == [8, 8, 16]
    for length in (1, 5, 8, 11):
        prompt = [(13 * i + 7) % VOCAB for i in range(length)]
        want = plain.generate(prompt, 20).tokens
        assert padded.generate(prompt, 20).tokens == want
        assert medusa_padded.generate(prompt, 20).tokens == want
        (plain_session,), (padded_session,) = plain._sessions.values(), padded._sessions.values()
        fed = length + 19
        assert_equal_but_for_cpu_rounding(padded_session.cache.k[..., :fed, :], plain_session.cache.k[..., :fed, :])


def test_prepare_sets_up_the_session_a_request_uses(model):
    decoder = MedusaDecoder(model, random_heads(2), [[0], [0, 0]])
    decoder.prepare(10, 40)
    (session,) = decoder._sessions.values()
    decoder.generate(list(range(10)), 40)
    assert list(decoder._sessions.values()) == [session]
    with pytest.raises(UserError, match="exceed the model's 2048 positions"):
        decoder.prepare(2000, 100)


def test_stops_at_end_token_and_length(model):
    base = MedusaDecoder(model)
    free = base.generate([4, 5, 6], 25)
    stop = free.tokens[7]
    cut = MedusaDecoder(model, random_heads(2), [[0], [0, 0], [1]]).generate([4, 5, 6], 25, eos_ids=[stop])
    assert cut.tokens == free.tokens[: free.tokens.index(stop)]
    assert len(base.generate([4, 5, 6], 3).tokens) == 3


def schedule(steps_used: int, more_needed) -> list[str]:
    """The order of step parts and reads when a request stops after ``steps_used`` steps."""
    events = []

    def read(i):
        events.append(f"read {i}")
        return [0, i]

    steps = run_ahead(lambda i: events.append(f"start {i}"), lambda i: events.append(f"finish {i}"), read, more_needed)
    for used, _ in enumerate(steps, start=1):
        if used == steps_used:
            break
    return events


def test_steps_run_ahead_while_more_are_needed_and_never_past_the_last():
    """With CUDA graphs each step is started before the previous one is read and finished after,
    so the GPU never waits for the host and a request that ends spends only the start of the
    step after its last; where the token limit may end it, nothing is started ahead."""
    left = iter([True, True, True, False])
    assert schedule(4, lambda: next(left)) == [
        "start 0", "finish 0", "start 1", "read 0", "finish 1", "start 2", "read 1", "finish 2",
        "start 3", "read 2", "finish 3", "read 3",
    ]
    assert schedule(2, lambda: True) == ["start 0", "finish 0", "start 1", "read 0", "finish 1", "start 2", "read 1"]
    assert schedule(2, lambda: False) == ["start 0", "finish 0", "read 0", "start 1", "finish 1", "read 1"]


def test_bad_requests_get_clear_errors(model):
    decoder = MedusaDecoder(model)
    with pytest.raises(UserError, match="prompt is empty"):
        decoder.generate([], 5)
    with pytest.raises(UserError, match="max_tokens must be at least 1"):
        decoder.generate([1], 0)
    with pytest.raises(UserError, match="exceed the model's 2048 positions"):
        decoder.generate([1] * 2000, 100)
    with pytest.raises(UserError, match="3 levels deep but the heads number 2"):
        MedusaDecoder(model, random_heads(2), [[0], [0, 0], [0, 0, 0]])
    with pytest.raises(UserError, match="needs a tree"):
        MedusaDecoder(model, random_heads(2), [])
    with pytest.raises(UserError, match="rank-97 token but they choose from 97 tokens"):
        MedusaDecoder(model, random_heads(2), [[0], [97]])
    for tile_rows in (8, 96):
        with pytest.raises(UserError, match=f"power of two of at least 16, got {tile_rows}"):
            MedusaDecoder(model, random_heads(2), [[0]], head_tile_rows=tile_rows)


def test_batched_distillation_answers_match_single_decoding(model):
    from medusa_runtime.tuning.train import batched_generate

    prompts = [[3, 4, 5], [7, 8, 9, 10, 11, 12], [1]]
    single = MedusaDecoder(model)
    stop = single.generate(prompts[1], 20).tokens[4]
    answers = batched_generate(model, prompts, 20, {stop})
    for prompt, answer in zip(prompts, answers):
        assert answer == single.generate(prompt, 20, [stop]).tokens


def test_sampled_generation_is_seeded_and_drops_unfinished_text(model):
    from medusa_runtime.tuning.train import batched_generate

    prompts = [[3, 4, 5]] * 6 + [[7, 8]] * 6

    def sample(seed: int, **options):
        generator = torch.Generator().manual_seed(seed)
        return batched_generate(model, prompts, 12, set(), temperature=1.0, generator=generator, **options)

    first, again = sample(0), sample(0)
    assert first == again and all(len(a) == 12 for a in first)
    assert len({tuple(a) for a in first}) > 2  # sampling, not one greedy answer repeated
    assert first != sample(1)
    # With no end token nothing finishes, so every continuation is dropped.
    assert sample(0, keep_unfinished=False) == [None] * len(prompts)


def batched_and_single_hidden_states(model):
    """``hidden_and_targets`` with four sequences of different lengths in one right-padded batch
    and one sequence at a time: (hidden, targets) each."""
    from medusa_runtime.tuning.train import Sequences, hidden_and_targets

    seqs = Sequences(ids=[[1, 2, 3, 4, 5, 6, 7], [9, 8, 7, 6], [5, 5], [4, 3, 2, 1, 0, 1, 2, 3, 4]],
                     prompt_lengths=[2, 1, 1, 3])
    return (hidden_and_targets(model, seqs, num_heads=3, batch=4),
            hidden_and_targets(model, seqs, num_heads=3, batch=1))


def test_batched_hidden_states_equal_one_sequence_at_a_time(model):
    """The padding never reaches a real position. The torch operations promise no bit identity
    across batch shapes (training needs none), so the float32 rows agree to CPU rounding."""
    (batched, batched_targets), (single, single_targets) = batched_and_single_hidden_states(model)
    # Answer positions of sequences 1, 2 and 4 (the third has a one-token answer and is skipped),
    # in the same order either way: by sequence length.
    assert single.shape == (5 + 3 + 6, HIDDEN)
    assert torch.equal(batched_targets, single_targets)
    assert_equal_but_for_cpu_rounding(batched, single)


def test_batched_hidden_state_check_fails_on_a_wrong_mask(model, monkeypatch):
    """Issue 19: the rounding tolerance still catches a real error. Planted: the attention mask
    also shows every position its row's last key, which in a shorter, padded sequence is padding."""
    forward = model.forward

    def last_key_visible(tokens, positions, mask, *args, **kwargs):
        return forward(tokens, positions, mask | (torch.arange(mask.shape[-1]) == mask.shape[-1] - 1), *args, **kwargs)

    monkeypatch.setattr(model, "forward", last_key_visible)
    (batched, _), (single, _) = batched_and_single_hidden_states(model)
    longest = slice(-6, None)  # the longest sequence, unpadded in the batch, still agrees
    assert_equal_but_for_cpu_rounding(batched[longest], single[longest])
    with pytest.raises(AssertionError, match="not close"):
        assert_equal_but_for_cpu_rounding(batched, single)


def test_answer_styles_multiply_the_prompt_set():
    from medusa_runtime.tuning.prompts import with_answer_styles

    styled = with_answer_styles(["Why is the sky blue?", "Name a colour."], 3)
    assert len(styled) == 6 and styled[:2] == ["Why is the sky blue?", "Name a colour."]
    assert len(set(styled)) == 6
    with pytest.raises(UserError, match="between 1 and 4"):
        with_answer_styles(["x"], 9)
