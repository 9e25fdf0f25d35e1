package runner

// makeSteps wires each planned step to its stepper and what it needs.
func (r *Runner) makeSteps(d deps) map[step]stepper {
	stop := stopStep{rt: r.rt, grace: r.cfg.StopGrace}
	del := deleteStep{rt: r.rt}
	start := &startStep{rt: r.rt, net: r.net, keys: r.keys, agentBinary: r.cfg.AgentBinary, classes: r.classes, limits: r.cfg.classLimits, log: r.log, stager: d.stager}
	wait := waitAgentStep{agents: r.agents, endpoint: r.agentEndpoint, clock: r.clock}
	return map[step]stepper{
		stepPrepare:     prepareStep{ranges: r.ranges, disks: r.cfg.diskQuotas},
		stepDisk:        diskStep{},
		stepUnmountDisk: unmountDiskStep{log: r.log},
		stepClone: cloneStep{net: r.net, clone: d.clone, allowLocal: r.cfg.AllowLocalSources,
			sandbox: []string{r.cfg.AgentBinary, "internal-sandbox"}},
		stepImage: &imageStep{rt: r.rt, images: r.images, net: r.net, builds: r.builds, classes: r.classes, dataDir: r.cfg.DataDir,
			defaultImage: r.cfg.DefaultImage, gc: r.gc, log: r.log},
		stepMount:           mountStep{images: r.images, gc: r.gc, chown: d.chown},
		stepStart:           start,
		stepWaitAgent:       wait,
		stepFeatures:        featuresStep{rt: r.rt, agents: r.agents, endpoint: r.agentEndpoint, layer: func(key string) string { return featuresLayer(r.cfg.DataDir, key) }, gc: r.gc, log: r.log},
		stepRestart:         restartStep{rt: r.rt, grace: r.cfg.StopGrace, start: start, wait: wait, agents: r.agents},
		stepLifecycle:       lifecycleStep{rt: r.rt, agents: r.agents, endpoint: r.agentEndpoint},
		stepStop:            stop,
		stepDeleteContainer: del,
		stepUnmount:         unmountStep{images: r.images},
		stepRemove:          removeStep{net: r.net, images: r.images, ranges: r.ranges, log: r.log},
		stepReset:           resetStep{},
		stepBackup:          backupStep{r: r},
		stepRestore:         restoreStep{r: r},
		stepSalvage:         salvageStep{r: r},
	}
}
