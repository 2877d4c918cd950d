// Imported first by the CLI, before anything can touch libuv's thread pool: store reads and writes
// (fs.read/fs.write) run on that pool, and its default of 4 threads caps random reads that miss
// the cache at four in flight (nbdkit uses 16). The size is read once, at the pool's first use.
process.env['UV_THREADPOOL_SIZE'] ??= '16';
