#!/usr/bin/env bash
# The lifecycle scenarios of gc_scenarios.sh (retention by tier, touches, upgrades,
# deletes, pins, superseded and reclaimed snapshots, what restores, lists and rebuilds, the
# 90% reclaim space bound) once on the S3 backend: every store a node over its own bucket
# of the test RGW, with gc across nodes' two-step collection (docs/s3.md).
CAIRN_TEST_GC_S3=1 exec "$(dirname "$0")/gc_scenarios.sh"
