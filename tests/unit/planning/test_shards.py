import hashlib

import pytest

from steps.errors import ConfigError
from steps.output.layout import object_stem
from steps.planning.prefixes import choose_width, shard_prefix
from tests.support.plans import plan_shards


def sha_keys(count: int) -> list[str]:
    return [hashlib.sha256(str(i).encode()).hexdigest() + ".jpg" for i in range(count)]


def test_prefix_of_sha_named_key_is_its_leading_hex() -> None:
    key = "images/ABCDEF" + "0" * 58 + ".jpg"
    assert shard_prefix(key, 2) == "ab"
    assert object_stem(key) == "ABCDEF" + "0" * 58


def test_non_hex_names_are_planned_by_hash_of_their_stem_not_dropped() -> None:
    keys = ["IMG_0001.jpg", "holiday/IMG_0002.JPG", "readme"]
    plan = plan_shards(keys, target_size=1, max_shards=100, width=1)
    assert sorted(k for s in plan.shards for k in s.keys) == sorted(keys)
    assert shard_prefix("IMG_0001.jpg", 1) == hashlib.sha256(b"IMG_0001").hexdigest()[0]


@pytest.mark.parametrize(
    ("count", "target", "width"),
    [
        (10, 1500, 0),
        (1500, 1500, 0),
        (1501, 1500, 1),
        (24_000, 1500, 1),
        (24_001, 1500, 2),
        (330_000, 1500, 2),
        (10**8, 1500, 4),
    ],
)
def test_auto_width_targets_shard_size(count: int, target: int, width: int) -> None:
    assert choose_width(count, target) == width


def test_auto_shards_hold_about_the_target_not_a_sixteenth_of_it() -> None:
    plan = plan_shards(sha_keys(5000), target_size=100, max_shards=1000)
    # Width 2 would give 256 shards of ~20; 50 ranges of 16+ width-3 prefixes each hold ~100.
    assert plan.width == 3 and len(plan.shards) == 50
    assert all(85 <= len(s) <= 115 for s in plan.shards), sorted(len(s) for s in plan.shards)
    assert "packed into 50 ranges of ~100 images" in plan.reason
    small = plan_shards(sha_keys(54), target_size=20, max_shards=16)
    assert len(small.shards) == 3 and all(14 <= len(s) <= 22 for s in small.shards)


def test_prefixes_that_are_no_more_than_the_target_needs_stay_one_shard_each() -> None:
    plan = plan_shards(sha_keys(5000), target_size=320, max_shards=100)  # 16 shards needed
    assert plan.width == 1 and [s.name for s in plan.shards] == [f"{p:x}" for p in range(16)]


def test_more_prefixes_than_max_shards_are_packed_into_balanced_ranges() -> None:
    keys = sha_keys(5000)
    plan = plan_shards(keys, target_size=20, max_shards=100)
    assert plan.width == 3  # 250 wanted shards, 100 allowed: 4,096 prefixes, packed into ranges
    assert 90 <= len(plan.shards) <= 100
    sizes = [len(s) for s in plan.shards]
    assert max(sizes) < 1.25 * 5000 / 100
    assert sorted(k for s in plan.shards for k in s.keys) == sorted(keys)
    assert plan.shards[0].name.startswith("000-") and plan.shards[-1].name.endswith("-fff")
    for shard in plan.shards:  # every key lies in its shard's prefix range
        first, last = shard.name.split("-")
        assert all(first <= shard_prefix(k, 3) <= last for k in shard.keys)
    assert "packed into" in plan.reason and "--max-shards" in plan.reason and "max-num-splits" in plan.reason


def test_stored_ranges_place_new_keys_in_the_same_shards() -> None:
    first = plan_shards(sha_keys(5000), target_size=20, max_shards=100)
    grown = plan_shards(sha_keys(6000), target_size=20, max_shards=100, width=first.width, starts=first.starts)
    assert {s.name for s in grown.shards} == {s.name for s in first.shards}
    by_name = {s.name: set(s.keys) for s in grown.shards}
    assert all(set(s.keys) <= by_name[s.name] for s in first.shards)


def test_forced_width_over_limit_explains_how_to_raise_it() -> None:
    with pytest.raises(ConfigError, match=r"--prefix-width 2.*gives 256.*--max-shards 256.*--max-num-splits 256"):
        plan_shards(sha_keys(5000), target_size=100, max_shards=100, width=2)


def test_plan_is_sorted_stable_and_complete() -> None:
    keys = sha_keys(3000)
    first = plan_shards(keys, target_size=200, max_shards=100)
    second = plan_shards(list(reversed(keys)) + keys[:10], target_size=200, max_shards=100)
    assert first == second
    assert [s.prefix for s in first.shards] == sorted(s.prefix for s in first.shards)
    assert all(list(s.keys) == sorted(s.keys) for s in first.shards)
    assert sorted(k for s in first.shards for k in s.keys) == sorted(keys)


def test_width_zero_is_one_shard_named_all() -> None:
    plan = plan_shards(sha_keys(10), target_size=100, max_shards=100)
    assert [s.name for s in plan.shards] == ["all"]


@pytest.mark.parametrize(("target", "width"), [(0, 0), (10, 5), (10, -1)])
def test_bad_planner_settings_are_config_errors(target: int, width: int) -> None:
    with pytest.raises(ConfigError):
        plan_shards(sha_keys(10), target_size=target, max_shards=100, width=width)


def test_stem_drops_only_the_last_extension() -> None:
    assert object_stem("a/IMG_1.v2.jpg") == "IMG_1.v2"
    assert object_stem(".hidden.png") == ".hidden"
    assert object_stem(".bashrc") == ".bashrc"
    assert object_stem("README") == "README"


def test_keys_sharing_an_output_name_share_a_shard() -> None:
    assert shard_prefix("photos/a.jpg", 3) == shard_prefix("photos/a.png", 3)
