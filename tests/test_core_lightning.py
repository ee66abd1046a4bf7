"""The Lightning evidence callback records each epoch's own numbers."""

from __future__ import annotations

import lightning as L
import torch

from kitaeru.core.lightning import EvidenceCallback
from kitaeru.core.run import RunFolder


class _Counter(L.LightningModule):
    """Logs the epoch number from the module's own validation-epoch-end hook and a train loss."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def training_step(self, batch, _):
        loss = (self.w * batch[0]).sum() * 0 + float(self.current_epoch + 1)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss + 0 * self.w.sum()

    def validation_step(self, batch, _):
        pass

    def on_validation_epoch_end(self):
        self.log("val_epoch_seen", float(self.current_epoch + 1))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_rows_hold_their_own_epoch(tmp_path):
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(4, 1)), batch_size=2)
    run = RunFolder(tmp_path, tensorboard=False)
    trainer = L.Trainer(max_epochs=3, callbacks=[EvidenceCallback(run)], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        accelerator="cpu")
    trainer.fit(_Counter(), data, data)
    rows = run.read_results()
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert [r["val_epoch_seen"] for r in rows] == [1.0, 2.0, 3.0]
    assert [r["train_loss"] for r in rows] == [1.0, 2.0, 3.0]
    assert all(r["lr"] == 0.1 and r["seconds"] >= 0 for r in rows)
