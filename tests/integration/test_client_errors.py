import pytest

import cloudburst
from cloudburst.cluster.local import random_loopback_host

pytestmark = pytest.mark.integration


def test_connecting_to_no_cluster_fails_fast_with_a_hint():
    with pytest.raises(cloudburst.DeadlineExceeded, match="is a cluster running there"):
        cloudburst.connect(random_loopback_host(), timeout=0.3)
