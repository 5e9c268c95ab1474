from service.store.schema import EventPatch
from service.store.standby import Standby


def test_holds_recent_patches_and_forgets_old_ones():
    now = [100.0]
    standby = Standby(keep_s=10, clock=lambda: now[0])
    standby.hold(EventPatch(id="a", start_time=1, updated_at=1))
    now[0] = 105
    standby.hold(EventPatch(id="b", start_time=1, updated_at=1))
    now[0] = 112
    standby.hold(EventPatch(id="c", start_time=1, updated_at=1))
    assert [p.id for p in standby.take()] == ["b", "c"]
    assert len(standby) == 0
