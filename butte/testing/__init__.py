"""Test kit: real local clusters (`butte.testing.cluster`) and a scriptable fake scheduler
endpoint (`butte.testing.fake_master`). Shipped code never imports this package."""
