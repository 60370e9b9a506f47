package saga

import "time"

// SetOrphanWindow sets the orphan window of the machines built after it,
// until the returned func restores it.
func SetOrphanWindow(d time.Duration) (restore func()) {
	old := orphanWindow
	orphanWindow = d
	return func() { orphanWindow = old }
}
