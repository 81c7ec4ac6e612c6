// The MLflow UI screenshots of docs/mlflow.md, driven by playwright-core in Debian's Chromium
// (docs/mlflow_screenshots.sh starts the server and calls this): the runs table with the study's
// metric columns, the chart view's learning curves, and one run's page, each with MLflow's
// Assistant panel closed.
//   node docs/mlflow_screenshots.mjs <server URL> <experiment id> <run id> <output folder>
import { createRequire } from "node:module";

// playwright-core from npm install --prefix .screenshots (git-ignored)
const { chromium } = createRequire(`${process.cwd()}/.screenshots/`)("playwright-core");

const [base, experiment, run, out] = process.argv.slice(2);
const RECIPE_40 = "params.epochs = '40' and params.`train.init` = 'default' and params.`data.source` LIKE '%cifar10-jpeg.tar.gz'";
const COLUMNS_ON = ["model", "seed", "final_test_acc", "eval/test_acc", "mean_epoch_time_s_after_first"];
const COLUMNS_OFF = ["Dataset", "Source", "Models"];

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"],
});
const page = await browser.newPage({ viewport: { width: 1600, height: 900 } });

async function open(path, ready) {
  await page.goto(`${base}/#${path}`);
  await page.waitForSelector(ready, { timeout: 90_000 });
  const close = page.locator('button[aria-label="Close"]');  // the Assistant panel
  if (await close.count()) await close.first().click();
  await page.waitForTimeout(1000);
}

async function filterRuns() {
  await page.fill('input[placeholder*="metrics.rmse"]', RECIPE_40);
  await page.keyboard.press("Enter");
  await page.waitForTimeout(2500);
}

// the runs table: the 40-epoch recipe runs with their accuracy and speed columns
await open(`/experiments/${experiment}/runs?workflowType=machine_learning`, "text=Run Name");
await filterRuns();
await page.click('button:has-text("Columns")');
for (const name of [...COLUMNS_ON, ...COLUMNS_OFF]) await page.getByText(name, { exact: true }).last().click();
await page.keyboard.press("Escape");
await page.waitForTimeout(1500);
await page.screenshot({ path: `${out}/mlflow_runs_table.png`, clip: { x: 0, y: 0, width: 1600, height: 760 } });

// the chart view: test accuracy and training loss per epoch, every run shown
await open(`/experiments/${experiment}/runs?workflowType=machine_learning&compareRunsMode=CHART`, "text=Run Name");
await filterRuns();
await page.click('[data-testid="experiment-view-runs-visibility-column-header"]');
await page.getByText("Show all runs").first().click();
await page.fill('input[placeholder*="Search metric charts"]', "^(test_acc|train_loss)$");
await page.waitForTimeout(2500);
await page.screenshot({ path: `${out}/mlflow_learning_curves.png`, clip: { x: 0, y: 0, width: 1250, height: 720 } });

// one run's page
await open(`/experiments/${experiment}/runs/${run}?workflowType=machine_learning`, "text=Overview");
await page.setViewportSize({ width: 1600, height: 1200 });
await page.waitForTimeout(1500);
await page.screenshot({ path: `${out}/mlflow_run_page.png`, clip: { x: 0, y: 0, width: 1600, height: 1200 } });
await browser.close();
