package runner

// LockDataDir takes the lock that `troupe dev` holds on its data dir while
// it runs (LockFile), for tools that open a stopped dev's data, such as
// `troupe state rebuild --dev`: it fails (ErrUsage, naming dev's pid) while
// dev runs, and a dev started meanwhile refuses until unlock is called.
func LockDataDir(dir string) (unlock func(), err error) { return lockDataDir(dir) }
