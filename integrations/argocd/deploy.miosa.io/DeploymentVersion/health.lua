-- Argo CD health of a deploy.miosa.io DeploymentVersion (docs/gitops.md, "Health").
-- Reads the kstatus conditions the operator writes (Ready, Reconciling, Stalled).
-- A version whose artifacts retention collected is Healthy: a final state, the object is
-- the audit record and stays in Git until you drop its manifest.
local function condition(name)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == name then
      return c
    end
  end
  return nil
end

local function is_true(c)
  return c ~= nil and c.status == "True"
end

local function describe(c)
  local reason = tostring(c.reason or c.type)
  if c.message ~= nil and c.message ~= "" then
    return reason .. ": " .. tostring(c.message)
  end
  return reason
end

local hs = {}
if obj.metadata.deletionTimestamp ~= nil then
  hs.status = "Progressing"
  hs.message = "Being deleted"
  return hs
end
if obj.status == nil or obj.status.state == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to pick the version up"
  return hs
end
if obj.status.observedGeneration ~= nil and obj.status.observedGeneration ~= obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(obj.metadata.generation)
  return hs
end

local ready = condition("Ready")
local stalled = condition("Stalled")
local reconciling = condition("Reconciling")
if is_true(stalled) then
  hs.status = "Degraded"
  hs.message = describe(stalled)
elseif is_true(reconciling) then
  hs.status = "Progressing"
  hs.message = describe(reconciling)
elseif is_true(ready) then
  hs.status = "Healthy"
  hs.message = describe(ready)
elseif obj.status.artifactsCollectedAt ~= nil then
  hs.status = "Healthy"
  hs.message = "Artifacts collected at " .. obj.status.artifactsCollectedAt .. "; the record is kept for audit"
elseif obj.status.state == "failed" then
  hs.status = "Degraded"
  hs.message = ready ~= nil and describe(ready) or "The version failed"
else
  hs.status = "Progressing"
  hs.message = ready ~= nil and describe(ready) or ("Version is " .. obj.status.state)
end
return hs
