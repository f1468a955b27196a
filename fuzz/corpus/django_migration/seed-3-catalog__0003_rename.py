from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('catalog', '0002_delete_tag'),
    ]

    operations = [
        migrations.RenameModel(
            old_name='Category',
            new_name='Kind',
        ),
    ]
