package netns

// ForgetNames drops the cached names so that the next lookup scans again.
func ForgetNames() {
	names.Lock()
	names.m = nil
	names.Unlock()
}
