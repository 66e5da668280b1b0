# Spark and Dask on butte (tests/frameworks/test_spark_submit.py, test_dask_cluster.py):
# a Java runtime for the Spark daemons (Spark 4 needs Java 17 or 21), and the spark/dask
# extras (pyspark carries the Spark distribution; the test extra normally brings them).
java_major() {
    java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n 1
}
if ! command -v java >/dev/null 2>&1 || [ "$(java_major)" -lt 17 ] 2>/dev/null; then
    apt_install openjdk-17-jre-headless || apt_install openjdk-21-jre-headless \
        || log "warning: could not install Java 17; the Spark tests cannot run"
fi
if ! "$VPY" -c 'import pyspark, distributed, dask.array, bokeh' >/dev/null 2>&1; then
    log "installing the spark and dask extras"
    quiet "${PIP[@]}" install "pyspark==4.3.0" "dask[array,distributed]==2026.8.0" "bokeh==3.9.2"
fi
